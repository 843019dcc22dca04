package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/capraft/capraft/client"
)

// The text form and the JSON form of the same transaction parse alike.
func TestTxnTextAndJSONFormsAgree(t *testing.T) {
	text := `# comment
mod("ctr") = 5
value("owner") != "alice bob"
version("v") > 0
create("c") < 9
absent("lock")
present("p")

put ctr "6"
get ctr
range "p/" 10

del "\xff"
range ""
del --prefix tmp/
delete "t 2/" --prefix
`
	js := `{"compares": [
  {"target": "mod", "key": "ctr", "op": "=", "number": 5},
  {"target": "value", "key": "owner", "op": "!=", "value": "alice bob"},
  {"target": "version", "key": "v", "op": ">", "number": 0},
  {"target": "create", "key": "c", "op": "<", "number": 9},
  {"target": "absent", "key": "lock"},
  {"target": "present", "key": "p"}],
 "then": [{"op": "put", "key": "ctr", "value": "6"}, {"op": "get", "key": "ctr"}, {"op": "range", "key": "p/", "limit": 10}],
 "else": [{"op": "del", "key_base64": "/w=="}, {"op": "range", "key": ""}, {"op": "del", "key": "tmp/", "prefix": true},
   {"op": "delete", "key": "t 2/", "prefix": true}]}`
	want := &txnSpec{
		cmps: []client.Cmp{client.ModRevision("ctr").Equal(5), client.Value("owner").NotEqual([]byte("alice bob")),
			client.Version("v").Greater(0), client.CreateRevision("c").Less(9), client.Absent("lock"), client.Present("p")},
	}
	want.then.add("put", "ctr", client.OpPut("ctr", []byte("6")))
	want.then.add("get", "ctr", client.OpGet("ctr"))
	want.then.add("range", "p/", client.OpRange("p/", 10))
	want.els.add("del", "\xff", client.OpDelete("\xff"))
	want.els.add("range", "", client.OpRange("", 0))
	want.els.add("del --prefix", "tmp/", client.OpDeletePrefix("tmp/"))
	want.els.add("del --prefix", "t 2/", client.OpDeletePrefix("t 2/"))
	for name, src := range map[string]string{"text": text, "json": js} {
		got, err := parseTxn([]byte(src))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s form parsed as\n%+v\nwant\n%+v", name, got, want)
		}
	}
}

// Mistakes are named with their line.
func TestTxnParseErrorsNameTheLine(t *testing.T) {
	for src, want := range map[string]string{
		"mod(\"k\") = x\n":          `line 1: compare "mod(\"k\") = x": mod takes a number`,
		"mod(\"k\") ~ 1\n":          "OP one of = != < >",
		"size(\"k\") = 1\n":         `unknown target "size"`,
		"absent(\"k\") = 1\n":       "absent takes no operator",
		"mod(k) = 1\n":              "the key must be a quoted string",
		"\nput k\n":                 `line 2: "put k": put takes KEY VALUE`,
		"\n\nfrob k\n":              `line 3: "frob k": unknown operation "frob"`,
		"\n\n\nget k\n":             "after the else operations",
		"\nget \"unterminated\n":    "bad quoted string",
		`{"then": [{"op": "get"}]}`: "empty key",
		`{"compares": [{"x": 1}]}`:  `unknown field "x"`,
		`{"compares": [{"target": "mod", "key": "k", "op": "="}]}`: `needs "number"`,
		"\ndel --prefix \"\"\n": "empty prefix",
		"\ndel --prefix\n":      "del --prefix takes PREFIX",
		"\ndel --prefix a b\n":  "del --prefix takes PREFIX",
		`{"then": [{"op": "get", "key": "k", "prefix": true}]}`: `"prefix" is for del only, not "get"`,
		`{"then": [{"op": "del", "key": "", "prefix": true}]}`:  "empty prefix",
	} {
		_, err := parseTxn([]byte(src))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want it to say %q", src, err, want)
		}
	}
}
