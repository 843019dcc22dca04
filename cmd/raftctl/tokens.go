package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/token"
)

// tokenJSONHelp lists the fields every token command prints about a token.
const tokenJSONHelp = `"id": string, "role": string, "minted_role": string, "key_id": int,` + "\n" +
	`  "restrict_prefix": bool, "prefix": string (when restricted), "read_only": bool,` + "\n" +
	`  "expires": string (RFC 3339) or null, "expired": bool`

func tokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, narrow, revoke and inspect tokens",
		Long: "A token is a credential: whoever holds it holds what it grants (a client's\n" +
			"key-value access, possibly confined to a key prefix and/or read-only, or an\n" +
			"operator's authority), until it expires or is revoked. Any node verifies it.\n" +
			"Anyone holding a token can derive a narrower one offline (token attenuate);\n" +
			"revoking a token revokes every token derived from it.\n\n" +
			"Log in with one: raftctl --token-file F ... (or $RAFTCTL_TOKEN_FILE).",
		Args: exactArgs(0, "a subcommand: create, attenuate, revoke or inspect"),
		RunE: func(*cobra.Command, []string) error {
			return usagef("raftctl token needs a subcommand: create, attenuate, revoke or inspect")
		},
	}
	cmd.AddCommand(tokenCreateCommand(g), tokenAttenuateCommand(g), tokenRevokeCommand(g), tokenInspectCommand(g))
	return cmd
}

// restrictFlags are the flags that narrow a token.
type restrictFlags struct {
	prefix   string
	readOnly bool
	ttl      time.Duration
}

func (r *restrictFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.prefix, "prefix", "", "confine the token to keys starting with `P` (as raftctl range takes it)")
	cmd.Flags().BoolVar(&r.readOnly, "read-only", false, "refuse writes")
	cmd.Flags().DurationVar(&r.ttl, "ttl", 0, "expire after `D` (e.g. 24h; default: never)")
}

// check refuses flags that cannot narrow anything: a --ttl that is not
// positive, a prefix over the key limit.
func (r *restrictFlags) check(cmd *cobra.Command) error {
	if cmd.Flags().Changed("ttl") && r.ttl <= 0 {
		return usagef("--ttl must be positive, e.g. 24h (omit it for no expiry)")
	}
	return checkKeyLen("--prefix", r.prefix)
}

func tokenCreateCommand(g *globals) *cobra.Command {
	var r restrictFlags
	var operator bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Mint a token (needs an operator's credential); prints it alone on stdout",
		Long: "token create asks the cluster to mint a token and prints it alone on stdout,\n" +
			"so that T=$(raftctl token create ...) keeps it; its id, which names it for\n" +
			"token revoke, goes to stderr. Without flags it is a client's token for every\n" +
			"key, read-write, with no expiry:\n" +
			"  raftctl token create --prefix app/ --read-only --ttl 24h > app.token\n" +
			"  raftctl token create --operator > operator.token\n" +
			"Keep tokens in files only you can read, and pass them with --token-file.\n\n" +
			`JSON: {"token": string, ` + tokenJSONHelp + "}",
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := r.check(cmd); err != nil {
				return err
			}
			prefixSet := cmd.Flags().Changed("prefix")
			if operator && (prefixSet || r.readOnly) {
				return usagef("--operator cannot go with --prefix or --read-only: a restricted token grants only a client's authority; drop --operator")
			}
			spec := client.TokenSpec{Operator: operator, RestrictPrefix: prefixSet, Prefix: r.prefix, ReadOnly: r.readOnly, TTL: r.ttl}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				text, id, err := c.CreateToken(ctx, spec)
				if err != nil {
					return err
				}
				t, err := token.Parse(text)
				if err != nil {
					return fmt.Errorf("the node answered a token raftctl cannot read (a newer node?): %w", err)
				}
				if id != t.ID().String() {
					return fmt.Errorf("the node answered token id %s for a token whose id is %s (a bug in the node)", cell(id), t.ID())
				}
				obj := tokenJSON(t, time.Now())
				obj["token"] = text
				return g.emit(cmd, obj, func(w io.Writer) {
					fmt.Fprintln(w, text)
					fmt.Fprintf(cmd.ErrOrStderr(), "token id %s (revoke it with: raftctl token revoke %[1]s)\n", id)
				})
			})
		},
	}
	r.add(cmd)
	cmd.Flags().BoolVar(&operator, "operator", false, "an operator's token (membership, tokens, and everything a client may do)")
	return cmd
}

func tokenAttenuateCommand(g *globals) *cobra.Command {
	var r restrictFlags
	cmd := &cobra.Command{
		Use:   "attenuate TOKEN|-",
		Short: "Derive a narrower token offline; prints it alone on stdout",
		Long: "token attenuate derives from TOKEN (- reads it from stdin) a token that grants\n" +
			"less: confined to a prefix within TOKEN's, read-only, and/or expiring sooner.\n" +
			"It contacts no node: the holder of a token can narrow it by itself, and nobody\n" +
			"can widen one. A --ttl that would end after TOKEN's expiry leaves that expiry.\n" +
			"Revoking TOKEN (or the derived token) revokes both.\n" +
			"  raftctl token attenuate --prefix app/reports/ --read-only - < app.token\n\n" +
			`JSON: {"token": string, ` + tokenJSONHelp + "}",
		Args: exactArgs(1, "TOKEN (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := r.check(cmd); err != nil {
				return err
			}
			prefixSet := cmd.Flags().Changed("prefix")
			if !prefixSet && !r.readOnly && r.ttl == 0 {
				return usagef("raftctl token attenuate needs --prefix, --read-only or --ttl: what to narrow the token by")
			}
			t, err := tokenArg(cmd, args[0])
			if err != nil {
				return err
			}
			now := time.Now()
			narrow := token.Restriction{RestrictPrefix: prefixSet, Prefix: []byte(r.prefix), ReadOnly: r.readOnly}
			if r.ttl > 0 {
				narrow.NotAfter = now.Add(r.ttl)
			}
			derived, err := t.Attenuate(narrow)
			if err != nil {
				return err
			}
			obj := tokenJSON(derived, now)
			obj["token"] = derived.String()
			return g.emit(cmd, obj, func(w io.Writer) { fmt.Fprintln(w, derived.String()) })
		},
	}
	r.add(cmd)
	return cmd
}

func tokenRevokeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID|TOKEN|-",
		Short: "Revoke a token and every token derived from it (needs an operator's credential)",
		Long: "token revoke revokes the token with id ID (the 32 hex digits token create and\n" +
			"token inspect show), or the token TOKEN itself (- reads it from stdin), on every\n" +
			"node: logins with it, or any token derived from it, fail, and connections that\n" +
			"logged in with one lose what it granted. A revocation is kept for good: a\n" +
			"derived token's expiry says nothing of when the token it came from expires.\n\n" +
			`JSON: {"ok": true, "id": string}`,
		Args: exactArgs(1, "ID or TOKEN (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if !isTokenID(id) {
				t, err := tokenArg(cmd, id)
				if err != nil {
					return fmt.Errorf("%w (or give the token's id: 32 hex digits)", err)
				}
				id = t.ID().String()
			}
			id = strings.ToLower(id)
			// No expiry is passed: id names a family of tokens, and the
			// expiry of the one given does not bound its parent's, which
			// the revocation must outlive.
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if err := c.RevokeToken(ctx, id, time.Time{}); err != nil {
					return err
				}
				return g.emit(cmd, map[string]any{"ok": true, "id": id}, func(w io.Writer) { fmt.Fprintln(w, "OK") })
			})
		},
	}
}

// isTokenID reports whether s has the shape of a token id: 32 hex digits.
// (A token is never that short.)
func isTokenID(s string) bool {
	if len(s) != 2*len(token.ID{}) {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func tokenInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect [TOKEN|-]",
		Short: "Show what a token says it grants, offline (unverified)",
		Long: "token inspect prints what TOKEN (- reads it from stdin; default: the token of\n" +
			"--token-file, --token or their environment variables) says about itself: its\n" +
			"id, role, key id, key prefix, read-only flag and expiry. It contacts no node,\n" +
			"so its signature is NOT verified: a tampered token shows what it claims, and a\n" +
			"node refuses it at login. raftctl whoami shows what a node granted.\n\n" +
			"JSON: {" + tokenJSONHelp + `, "verified": false}`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("raftctl token inspect takes at most one argument, TOKEN; got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var t *token.Token
			if len(args) == 1 {
				var err error
				if t, err = tokenArg(cmd, args[0]); err != nil {
					return err
				}
			} else {
				text, err := g.creds.token()
				if err != nil {
					return err
				}
				if text == "" {
					return usagef("raftctl token inspect takes TOKEN (or - for stdin), or inspects the token of --token-file or --token; none was given")
				}
				if t, err = token.Parse(text); err != nil {
					return err
				}
			}
			now := time.Now()
			obj := tokenJSON(t, now)
			obj["verified"] = false
			return g.emit(cmd, obj, func(w io.Writer) {
				r := t.Restriction()
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "id\t%s\n", t.ID())
				fmt.Fprintf(tw, "role\t%s\n", describeRole(t))
				fmt.Fprintf(tw, "key id\t%d\n", t.KeyID())
				fmt.Fprintf(tw, "keys\t%s\n", describeKV(r.RestrictPrefix, string(r.Prefix), r.ReadOnly))
				fmt.Fprintf(tw, "expires\t%s\n", describeExpiry(r.NotAfter, now))
				fmt.Fprintln(tw, "verified\tno: read offline; a node checks the signature at login")
				_ = tw.Flush()
			})
		},
	}
}

// tokenArg parses a token argument; "-" reads it from stdin. Errors never
// show the token.
func tokenArg(cmd *cobra.Command, arg string) (*token.Token, error) {
	text, from := arg, "TOKEN"
	if arg == "-" {
		var err error
		if text, err = readToken(cmd.InOrStdin()); err != nil {
			return nil, fmt.Errorf("TOKEN from stdin: %w", err)
		}
		from = "TOKEN from stdin"
	}
	t, err := token.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return t, nil
}

// effectiveRole is the role a token grants at most: a restricted
// operator's token grants a client's authority.
func effectiveRole(t *token.Token) token.Role {
	if r := t.Restriction(); r.RestrictPrefix || r.ReadOnly {
		return token.Client
	}
	return t.Role()
}

func describeRole(t *token.Token) string {
	if role := effectiveRole(t); role != t.Role() {
		return fmt.Sprintf("%s (minted for an %s; its restrictions make it a %[1]s's)", role, t.Role())
	}
	return t.Role().String()
}

// describeKV says which keys a grant reaches, and how.
func describeKV(restricted bool, prefix string, readOnly bool) string {
	s := "every key"
	if restricted && prefix != "" {
		s = "keys starting with " + cli.QuoteShort(prefix, cellMax)
	}
	if readOnly {
		return s + ", read-only"
	}
	return s + ", read-write"
}

// describeExpiry shows when a grant ends, and how far that is from now.
func describeExpiry(at, now time.Time) string {
	if at.IsZero() {
		return "never"
	}
	s := at.UTC().Format(time.RFC3339Nano)
	d := at.Sub(now).Round(time.Second)
	if d < 0 {
		return s + " (expired " + (-d).String() + " ago)"
	}
	return s + " (in " + d.String() + ")"
}

// tokenJSON describes t for -o json (see tokenJSONHelp).
func tokenJSON(t *token.Token, now time.Time) map[string]any {
	r := t.Restriction()
	obj := map[string]any{
		"id": t.ID().String(), "role": effectiveRole(t).String(), "minted_role": t.Role().String(), "key_id": t.KeyID(),
		"restrict_prefix": r.RestrictPrefix, "read_only": r.ReadOnly, "expires": nil, "expired": false,
	}
	if r.RestrictPrefix {
		setText(obj, "prefix", r.Prefix)
	}
	if !r.NotAfter.IsZero() {
		obj["expires"] = r.NotAfter.UTC().Format(time.RFC3339Nano)
		obj["expired"] = now.After(r.NotAfter)
	}
	return obj
}

func whoamiCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show what the connection holds: roles, key access, token, certificate",
		Long: "whoami asks the node raftctl connects to what the connection's credential\n" +
			"(--token-file, --token, --cert, or none) grants: its roles (operator, client,\n" +
			"peer), which keys it reaches and whether read-only, the token id, the expiry\n" +
			"and the certificate's subject.\n\n" +
			`JSON: {"operator": bool, "client": bool, "peer": bool, "restricted": bool,` + "\n" +
			`  "prefix": string (when restricted), "read_only": bool, "token_id": string,` + "\n" +
			`  "expires": string (RFC 3339) or null, "member_id": int, "subject": string}`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				id, err := c.Identity(ctx)
				if err != nil {
					return err
				}
				obj := map[string]any{
					"operator": id.Operator, "client": id.Client, "peer": id.Peer, "restricted": id.Restricted,
					"read_only": id.ReadOnly, "token_id": id.TokenID, "expires": nil, "member_id": id.MemberID,
					"subject": id.Subject,
				}
				if id.Restricted {
					setText(obj, "prefix", id.Prefix)
				}
				if !id.Expires.IsZero() {
					obj["expires"] = id.Expires.UTC().Format(time.RFC3339Nano)
				}
				return g.emit(cmd, obj, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintf(tw, "roles\t%s\n", describeRoles(id))
					if id.Client {
						fmt.Fprintf(tw, "keys\t%s\n", describeKV(id.Restricted, id.Prefix, id.ReadOnly))
					}
					if id.TokenID != "" {
						fmt.Fprintf(tw, "token id\t%s\n", cell(id.TokenID))
					}
					if id.Subject != "" {
						fmt.Fprintf(tw, "subject\t%s\n", cell(id.Subject))
					}
					if id.MemberID != 0 {
						fmt.Fprintf(tw, "member id\t%d\n", id.MemberID)
					}
					fmt.Fprintf(tw, "expires\t%s\n", describeExpiry(id.Expires, time.Now()))
					_ = tw.Flush()
				})
			})
		},
	}
}

// describeRoles lists the roles an identity holds.
func describeRoles(id client.Identity) string {
	var roles []string
	for _, r := range []struct {
		held bool
		name string
	}{{id.Operator, "operator"}, {id.Client, "client"}, {id.Peer, "peer"}} {
		if r.held {
			roles = append(roles, r.name)
		}
	}
	if len(roles) == 0 {
		return "none (the node grants this connection nothing but info and login; pass --token-file F)"
	}
	return strings.Join(roles, ", ")
}
