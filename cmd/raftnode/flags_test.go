package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/kv"
)

// Every bad flag is refused with a line naming it and what to give, before
// the node listens or creates its data directory. Each case runs with
// --listen on an address already taken: a check that came after listening
// would fail with "address already in use" instead, and one that came
// after opening the data directory would leave it behind.
func TestBadFlagsAreRefusedBeforeListeningOrTouchingTheDataDir(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		args []string
		want []string // one line per problem, in order
	}{
		{[]string{"--id", "0"}, []string{"--id 0: node ids start at 1"}},
		{[]string{"--peers", "1=127.0.0.1:70000"}, []string{`--peers: member 1: "127.0.0.1:70000": the port must be a number from 1 to 65535`}},
		{[]string{"--peers", "1=127.0.0.1:0"}, []string{`--peers: member 1: "127.0.0.1:0": the port must be a number from 1 to 65535`}},
		{[]string{"--peers", "1=127.0.0.1"}, []string{`--peers: member 1: "127.0.0.1" has no port; give host:port`}},
		{[]string{"--peers", "1=::1:7001"}, []string{"write an IPv6 address in brackets, e.g. [::1]:7000"}},
		{[]string{"--peers", "1=http://127.0.0.1:7001"}, []string{`is a URL; give host:port without "http://"`}},
		{[]string{"--peers", "1=:7001"}, []string{`--peers: member 1: ":7001" has no host`}},
		{[]string{"--peers", "1=0.0.0.0:7001"}, []string{"means every interface of a listening node"}},
		{[]string{"--peers", "1=no host!:7001"}, []string{`"no host!" is neither an IP address nor a host name`}},
		{[]string{"--peers", "1=127.0.0.1:7001,2=127.0.0.1:7001"}, []string{"--peers: members 1 and 2 both have address 127.0.0.1:7001; each member needs its own address"}},
		{[]string{"--peers", "1=localhost:7001,2=LOCALHOST:7001"}, []string{"--peers: members 1 and 2 both have address localhost:7001"}},
		{[]string{"--peers", "1=[::ffff:127.0.0.1]:7001,2=127.0.0.1:7001"}, []string{"--peers: members 1 and 2 both have address 127.0.0.1:7001"}},
		{[]string{"--peers", "1=127.0.0.1:7001,1=127.0.0.1:7002"}, []string{"--peers: member 1 is listed twice"}},
		{[]string{"--peers", "0=127.0.0.1:7001"}, []string{`--peers: "0=127.0.0.1:7001" is not id=host:port with a positive id`}},
		{[]string{"--peers", "1=127.0.0.1:7001,"}, []string{`--peers: "" is not id=host:port`}},
		{[]string{"--peers", "2=127.0.0.1:7002,3=127.0.0.1:7003"}, []string{"does not list this node's --id 1"}},
		{[]string{"--join"}, []string{"--join needs --peers"}},
		{[]string{"--listen", "127.0.0.1:65536"}, []string{`--listen "127.0.0.1:65536": the port must be a number from 0 to 65535`}},
		{[]string{"--listen", "localhost"}, []string{`--listen "localhost" has no port`}},
		{[]string{"--listen", "0.0.0.0:0"}, []string{`--listen "0.0.0.0:0" serves every interface; give --advertise`}},
		{[]string{"--advertise", "127.0.0.1:0"}, []string{`--advertise "127.0.0.1:0": the port must be a number from 1 to 65535`}},
		{[]string{"--advertise", "[::]:7000"}, []string{`--advertise "[::]:7000" means every interface`}},
		{[]string{"--data-dir", ""}, []string{"--data-dir is empty"}},
		{[]string{"--cluster-name", " "}, []string{"--cluster-name is empty"}},
		{[]string{"--max-conns", "-1"}, []string{"--max-conns -1: give the number of connections to serve at once, from 1 to 1048576"}},
		{[]string{"--max-conns", "0"}, []string{"--max-conns 0:"}},
		{[]string{"--max-conns", "2000000"}, []string{"--max-conns 2000000:"}},
		{[]string{"--max-message-size", "1"}, []string{"--max-message-size 1: give 4194304 (4 MiB) to 67108864 (64 MiB) bytes; Raft needs 4 MiB"}},
		{[]string{"--max-message-size", "4194303"}, []string{"--max-message-size 4194303:"}},
		{[]string{"--max-message-size", "67108865"}, []string{"--max-message-size 67108865:"}},
		{[]string{"--echo-queue", "0"}, []string{"--echo-queue 0: give the messages a listener may fall behind, from 1 to 1048576"}},
		{[]string{"--echo-queue", "-5"}, []string{"--echo-queue -5:"}},
		{[]string{"--snapshot-entries", "0"}, []string{"--snapshot-entries 0: give how many applied entries trigger a snapshot, at least 1"}},
		{[]string{"--snapshot-catchup-entries", "0"}, []string{"--snapshot-catchup-entries 0: give how many entries to keep"}},
		{[]string{"--wal-segment-size", "0"}, []string{"--wal-segment-size 0: give 1048576 (1 MiB) to 1073741824 (1 GiB) bytes"}},
		{[]string{"--wal-segment-size", "-1"}, []string{"--wal-segment-size -1:"}},
		{[]string{"--wal-segment-size", "1099511627776"}, []string{"--wal-segment-size 1099511627776:"}},
		{[]string{"--heartbeat-interval", "0s"}, []string{"--heartbeat-interval 0s: give at least 1ms"}},
		{[]string{"--heartbeat-interval", "-1s"}, []string{"--heartbeat-interval -1s: give at least 1ms"}},
		{[]string{"--election-timeout", "0s"}, []string{"--election-timeout 0s: give at least 3 heartbeat intervals (3 x 100ms = 300ms)"}},
		{[]string{"--election-timeout", "200ms"}, []string{"--election-timeout 200ms: give at least 3 heartbeat intervals"}},
		{[]string{"--request-timeout", "0s"}, []string{"--request-timeout 0s: give a positive duration"}},
		{[]string{"--session-ttl", "-1m"}, []string{"--session-ttl -1m0s: give a positive duration"}},
		{[]string{"--handshake-timeout", "0s"}, []string{"--handshake-timeout 0s: give a positive duration"}},
		{[]string{"--shutdown-timeout", "-1s"}, []string{"--shutdown-timeout -1s: give a positive duration"}},
		{[]string{"--idle-timeout", "0s"}, []string{"--idle-timeout 0s: give a positive duration (e.g. 5m), or a negative one"}},
		// Every problem is reported at once, one line each.
		{[]string{"--max-conns", "-1", "--max-message-size", "1", "--peers", "1=127.0.0.1:70000"},
			[]string{"--peers: member 1:", "--max-conns -1:", "--max-message-size 1:"}},
		{[]string{"--snapshot-rate", "64MB"}, []string{`invalid argument "64MB" for "--snapshot-rate" flag: units are powers of 1024, written KiB, MiB or GiB: give bytes per second`}},
		{[]string{"--snapshot-rate", "fast"}, []string{`invalid argument "fast" for "--snapshot-rate" flag: not a rate: give bytes per second as a whole number with an optional KiB, MiB or GiB suffix (e.g. 64MiB), or 0 or unlimited for no cap`}},
		{[]string{"--snapshot-rate", "-1"}, []string{`for "--snapshot-rate" flag: not a rate`}},
		{[]string{"--snapshot-rate", "1.5GiB"}, []string{`for "--snapshot-rate" flag: not a rate`}},
		{[]string{"--snapshot-rate", "1KiB"}, []string{`for "--snapshot-rate" flag: below 64KiB per second`}},
		{[]string{"--snapshot-rate", "65535"}, []string{`for "--snapshot-rate" flag: below 64KiB per second`}},
		{[]string{"--snapshot-rate", "9000000000GiB"}, []string{`for "--snapshot-rate" flag: too large`}},
		// What pflag refuses by itself still points at --help.
		{[]string{"--snapshot-entries", "-1"}, []string{`invalid argument "-1" for "--snapshot-entries" flag: strconv.ParseUint: parsing "-1": invalid syntax (see raftnode --help)`}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			cmd := newCommand()
			cmd.SetArgs(append([]string{"--listen", busy.Addr().String(), "--data-dir", dataDir}, tc.args...))
			cmd.SetOut(&strings.Builder{})
			// Already cancelled: a node that wrongly started stops at once
			// instead of serving until the test times out.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil {
				t.Fatal("accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("error has %d lines, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, want := range tc.want {
				if !strings.Contains(lines[i], want) {
					t.Errorf("line %d: %q\nwant it to say %q", i+1, lines[i], want)
				}
			}
			if strings.Contains(err.Error(), "address already in use") {
				t.Errorf("the flag was checked after listening: %v", err)
			}
			if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
				t.Errorf("the data directory was touched (stat: %v)", err)
			}
		})
	}
}

// Good flags pass the checks, including the edge of each range.
func TestGoodFlagsPassTheChecks(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--listen", "127.0.0.1:0"},
		{"--listen", "[::1]:7000", "--peers", "1=[::1]:7000,2=[::1]:7001"},
		{"--listen", "0.0.0.0:7000", "--advertise", "node1.example:7000"},
		{"--id", "3", "--peers", "1=a.example:7001, 2=b.example:7002, 3=c.example:7003", "--join"},
		{"--max-conns", "1", "--max-message-size", "4194304", "--echo-queue", "1", "--snapshot-entries", "1",
			"--snapshot-catchup-entries", "1", "--wal-segment-size", "1048576", "--heartbeat-interval", "1ms", "--election-timeout", "3ms"},
		{"--max-conns", "1048576", "--max-message-size", "67108864", "--echo-queue", "1048576", "--wal-segment-size", "1073741824",
			"--snapshot-entries", "100000000", "--idle-timeout", "-1s"},
		{"--snapshot-rate", "64KiB"},
		{"--snapshot-rate", "unlimited"},
	} {
		var f flags
		if err := newCommandFor(&f).ParseFlags(args); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if _, err := f.validate(); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// The message size floor holds the largest entry the key-value store
// accepts, so a change of its limits cannot silently outgrow it.
func TestMessageSizeFloorHoldsTheLargestEntry(t *testing.T) {
	// The largest entry an accepted request becomes, plus the room the
	// transport keeps for the RPC envelope (64 KiB).
	largest := kv.Config{}.MaxEntrySize()
	if minMessageSize < largest+64<<10 {
		t.Fatalf("minMessageSize %d leaves too little room for the largest entry (%d bytes)", minMessageSize, largest)
	}
}

// --snapshot-rate reads bytes per second with KiB, MiB or GiB suffixes
// (powers of 1024), and 0 or unlimited for no cap, and hands the node's
// Config what it means: no flag, its default; no cap, a negative rate.
func TestSnapshotRateFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int64 // Config.SnapshotRate
		show string
	}{
		{nil, raftnode.DefaultSnapshotRate, "64MiB"},
		{[]string{"--snapshot-rate", "64MiB"}, 64 << 20, "64MiB"},
		{[]string{"--snapshot-rate", "64mib/s"}, 64 << 20, "64MiB"},
		{[]string{"--snapshot-rate", "512KiB"}, 512 << 10, "512KiB"},
		{[]string{"--snapshot-rate", "1GiB"}, 1 << 30, "1GiB"},
		{[]string{"--snapshot-rate", "1536MiB"}, 1536 << 20, "1536MiB"},
		{[]string{"--snapshot-rate", " 2 GiB "}, 2 << 30, "2GiB"},
		{[]string{"--snapshot-rate", "100000"}, 100000, "100000"},
		{[]string{"--snapshot-rate", "100000B"}, 100000, "100000"},
		{[]string{"--snapshot-rate", "65536"}, 64 << 10, "64KiB"},
		{[]string{"--snapshot-rate", "0"}, -1, "unlimited"},
		{[]string{"--snapshot-rate", "Unlimited"}, -1, "unlimited"},
	} {
		var f flags
		if err := newCommandFor(&f).ParseFlags(tc.args); err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if got := f.snapshotRate.config(); got != tc.want {
			t.Errorf("%v: Config.SnapshotRate %d, want %d", tc.args, got, tc.want)
		}
		if got := f.snapshotRate.String(); got != tc.show {
			t.Errorf("%v: shown as %q, want %q", tc.args, got, tc.show)
		}
	}
}
