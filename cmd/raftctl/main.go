// Command raftctl is the command-line client for capraft clusters, in the
// spirit of etcdctl.
//
//	raftctl put greeting hello            # OK revision=1
//	raftctl put blob --file blob.bin      # or: raftctl put blob - < blob.bin
//	raftctl get greeting                  # hello
//	raftctl cas greeting hello bye        # OK revision=2
//	raftctl range greet --limit 10
//	raftctl --endpoints 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 status
//	raftctl members
//	raftctl member add 4 127.0.0.1:7003 --learner
//	raftctl bench put --clients 64 --duration 10s
//	raftctl ping hello                    # prints echo:hello and the round trip
//	raftctl listen
//	raftctl lease grant 30s               # prints the lease id
//	raftctl put session/me alive --lease ID
//	raftctl watch app/ --rev 1 --prev     # every change under app/, replayed from revision 1
//	raftctl lock jobs/nightly -- ./run.sh # runs ./run.sh holding the lock jobs/nightly
//	raftctl elect service/leader node-a   # campaigns; prints each leader until Ctrl-C
//
// The endpoints default to $RAFTCTL_ENDPOINTS, else 127.0.0.1:7000, and
// are checked to be host:port before anything is dialled. With -o json
// every command prints one JSON object on stdout (its fields are listed
// in each command's help); keys and values that are not UTF-8 come as
// key_base64 / value_base64. Tables escape unprintable bytes and shorten
// long keys and values. On failure raftctl prints one line on
// stderr saying what went wrong and what to try (with -o json also a JSON
// object {"error": ..., "kind": ...} on stdout), and exits with status 1,
// or 77 (EX_NOPERM) when a node refused the credential (lock NAME --
// COMMAND exits with COMMAND's status).
//
// Credentials: --token-file F or --token T (or $RAFTCTL_TOKEN_FILE,
// $RAFTCTL_TOKEN) logs every connection in with a token; --cert and --key
// present a client certificate for mutual TLS. raftctl token create,
// attenuate, revoke and inspect manage tokens; raftctl whoami shows what
// the connection holds.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode/backup"
)

const defaultEndpoint = "127.0.0.1:7000"

type globals struct {
	endpoints   []string
	dialTimeout time.Duration
	timeout     time.Duration
	logLevel    string
	output      string
	tls         bool
	tlsCA       string
	creds       credentials
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes raftctl with args and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root, g := newRoot(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var rep *reportedError
	if g.output == "json" && !errors.As(err, &rep) {
		_ = newJSONEncoder(stdout).Encode(errorJSON(err))
	}
	fmt.Fprintln(stderr, "raftctl: "+escapeText(g.explain(err)))
	var ec *exitCodeError
	if errors.As(err, &ec) {
		return ec.code // the status of the command lock ran
	}
	if errors.Is(err, client.ErrPermissionDenied) {
		return exitPermissionDenied
	}
	return 1
}

// reportedError is a failure whose output was already printed (a status
// table with unreachable nodes): only the stderr line remains to print.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errorKind names the class of err for JSON output.
func errorKind(err error) string {
	var ue *usageError
	var le *limitError
	var se *client.ServerError
	switch {
	case errors.As(err, &ue):
		return "usage"
	case errors.As(err, &le):
		return "too_large"
	case errors.Is(err, backup.ErrDamaged):
		return "damaged"
	case errors.Is(err, client.ErrPermissionDenied):
		return "permission_denied"
	case errors.Is(err, client.ErrNotFound):
		return "not_found"
	case errors.Is(err, client.ErrLeaseNotFound):
		return "lease_not_found"
	case errors.Is(err, concurrency.ErrSessionExpired):
		return "session_expired"
	case errors.Is(err, client.ErrCompareFailed):
		return "compare_failed"
	case errors.Is(err, client.ErrUnknownOutcome):
		return "unknown_outcome"
	case client.IsUnavailable(err):
		return "unavailable"
	case errors.Is(err, client.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.As(err, &se):
		switch se.Code {
		case client.CodeInvalidArgument:
			return "invalid_argument"
		case client.CodeTooLarge:
			return "too_large"
		}
		return "server_error"
	}
	return "error"
}

// errorJSON is the JSON object printed for a failure with -o json.
func errorJSON(err error) map[string]any {
	obj := map[string]any{"error": err.Error(), "kind": errorKind(err)}
	var cf *client.CompareFailedError
	if errors.As(err, &cf) {
		if cf.Current != nil {
			obj["current"] = kvJSON(*cf.Current)
		} else {
			obj["current"] = nil
		}
	}
	return obj
}

// explain adds what to do next to the errors users meet most.
func (g *globals) explain(err error) string {
	msg := err.Error()
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		return msg + " (see raftctl --help)"
	case errors.Is(err, client.ErrPermissionDenied):
		return msg + " (" + g.creds.permissionHint(g.creds.cert != "") + ")"
	case errors.Is(err, client.ErrUnknownOutcome):
		return msg
	case errors.Is(err, syscall.ECONNREFUSED):
		return msg + " (is raftnode running at that address? set --endpoints)"
	case client.IsUnavailable(err):
		return msg + " (check the nodes with raftctl status)"
	case errors.Is(err, context.DeadlineExceeded):
		return msg + " (the node did not answer in time; is the address right? raise --timeout)"
	default:
		return msg
	}
}

func newRoot(stdout, stderr io.Writer) (*cobra.Command, *globals) {
	g := &globals{}
	root := &cobra.Command{
		Use:   "raftctl",
		Short: "Command-line client for capraft clusters",
		Long: "raftctl talks to a capraft cluster: any node in --endpoints serves any command.\n\n" +
			"With -o json every command prints one JSON object on stdout (each command's\n" +
			"help lists its fields). Keys and values that are not valid UTF-8 come as\n" +
			"\"key_base64\" / \"value_base64\" (standard base64) instead of \"key\" / \"value\",\n" +
			"so every byte round-trips. Tables show unprintable bytes escaped and long keys\n" +
			"shortened. On failure raftctl prints one line on stderr saying what to do next\n" +
			"(with -o json also {\"error\": ..., \"kind\": ...} on stdout) and exits 1, or 77\n" +
			"when a node refused the credential (kind \"permission_denied\"); lock NAME --\n" +
			"COMMAND exits with COMMAND's status.\n\n" +
			"Credentials: --token-file F or --token T (or $RAFTCTL_TOKEN_FILE, $RAFTCTL_TOKEN)\n" +
			"logs every connection in with a token; --cert and --key present a client\n" +
			"certificate (mutual TLS, with --tls-ca). Flags win over the environment.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       cli.Version(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return usagef("unknown output format %q: use -o table or -o json", g.output)
			}
			if err := g.checkEndpoints(cmd); err != nil {
				return err
			}
			if g.timeout <= 0 || g.dialTimeout <= 0 {
				return usagef("--timeout and --dial-timeout must be positive")
			}
			g.creds.noteFlags(cmd)
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	defaults := []string{defaultEndpoint}
	if env := os.Getenv("RAFTCTL_ENDPOINTS"); env != "" {
		defaults = strings.Split(env, ",")
	}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&g.endpoints, "endpoints", defaults, "comma-separated node addresses, host:port (e.g. 127.0.0.1:7000); default $RAFTCTL_ENDPOINTS")
	pf.DurationVar(&g.dialTimeout, "dial-timeout", 5*time.Second, "time allowed to connect to one endpoint")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "time allowed for a whole command, retries included (bench: for one operation; not for listen, nor for waiting in lock and elect)")
	pf.StringVar(&g.logLevel, "log-level", "off", "client log level on stderr: off, "+cli.LogLevels)
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table (for people) or json (one object per command, for scripts)")
	pf.BoolVar(&g.tls, "tls", false, "speak TLS to the nodes (raftnode --tls-cert); verified against the system's roots or --tls-ca")
	pf.StringVar(&g.tlsCA, "tls-ca", "", "PEM file of the CA that signed the nodes' certificates (implies --tls)")
	g.creds.addFlags(root)

	root.AddCommand(
		putCommand(g), getCommand(g), delCommand(g), casCommand(g), rangeCommand(g), txnCommand(g),
		statusCommand(g), membersCommand(g), memberCommand(g), transferCommand(g), snapshotCommand(g),
		benchCommand(g), pingCommand(g), listenCommand(g), watchCommand(g), endpointCommand(g), checkCommand(g), traceCommand(g), leaseCommand(g),
		lockCommand(g), electCommand(g), tokenCommand(g), whoamiCommand(g), newCertsCommand(),
	)
	return root, g
}

// checkEndpoints checks that every endpoint, from --endpoints or
// $RAFTCTL_ENDPOINTS, is host:port, before anything is dialled.
func (g *globals) checkEndpoints(cmd *cobra.Command) error {
	from := "--endpoints"
	if !cmd.Flags().Changed("endpoints") && os.Getenv("RAFTCTL_ENDPOINTS") != "" {
		from = "$RAFTCTL_ENDPOINTS"
	}
	if len(g.endpoints) == 0 {
		return usagef("no endpoints: set %s host:port[,host:port...], e.g. %s", from, defaultEndpoint)
	}
	for i, e := range g.endpoints {
		e = strings.TrimSpace(e)
		if e == "" {
			return usagef("empty endpoint in %s %s; give host:port[,host:port...], e.g. %s",
				from, cli.QuoteShort(strings.Join(g.endpoints, ","), 200), defaultEndpoint)
		}
		if _, err := cli.ParseAddr(e, cli.AddrRules{}); err != nil {
			return usagef("%s: endpoint %v", from, err)
		}
		g.endpoints[i] = e
	}
	return nil
}

// connect returns a client for the global flags.
func (g *globals) connect(stderr io.Writer, extra ...client.Option) (*client.Client, error) {
	opts := []client.Option{client.WithDialTimeout(g.dialTimeout)}
	tok, err := g.creds.token()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		opts = append(opts, client.WithToken(tok))
	}
	certs, err := g.creds.certificate()
	if err != nil {
		return nil, err
	}
	if g.tls || g.tlsCA != "" || certs != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: certs}
		if g.tlsCA != "" {
			pem, err := os.ReadFile(g.tlsCA)
			if err != nil {
				return nil, usagef("--tls-ca: %v", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, usagef("--tls-ca: %s holds no PEM certificate", g.tlsCA)
			}
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	if g.logLevel != "off" {
		log, err := cli.NewLogger("raftctl", g.logLevel, false, stderr)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithLogger(log))
	}
	return client.New(g.endpoints, append(opts, extra...)...)
}

// withClient runs fn with a client and a context bounded by --timeout.
func (g *globals) withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := g.connect(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	return fn(ctx, c)
}

// emit prints obj as one JSON object with -o json, else calls text.
func (g *globals) emit(cmd *cobra.Command, obj any, text func(w io.Writer)) error {
	w := cmd.OutOrStdout()
	if g.output == "json" {
		return newJSONEncoder(w).Encode(obj)
	}
	text(w)
	return nil
}

// newJSONEncoder returns the encoder of every JSON line raftctl prints.
// It leaves <, > and & as they are: the output is not HTML.
func newJSONEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// exactArgs checks that the command got n arguments, naming them.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s), %s; got %d", cmd.CommandPath(), n, names, len(args))
		}
		return nil
	}
}

func pingCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ping MSG",
		Short: "Send MSG to a node; print its reply and the round-trip time",
		Long: "ping sends MSG to a node and prints its reply and the round trip.\n\n" +
			`JSON: {"reply": string, "rtt_us": int, "node": int, "address": string}` + "\n" +
			`(a reply that is not valid UTF-8 comes as "reply_base64" instead of "reply")`,
		Args: exactArgs(1, "MSG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				// Connect first so the round trip measures the ping alone.
				info, err := c.Info(ctx)
				if err != nil {
					return err
				}
				start := time.Now()
				reply, err := c.Ping(ctx, args[0])
				rtt := time.Since(start)
				if err != nil {
					return err
				}
				obj := map[string]any{"rtt_us": rtt.Microseconds(), "node": info.ID, "address": info.Listen}
				setText(obj, "reply", reply)
				return g.emit(cmd, obj, func(w io.Writer) {
					fmt.Fprintf(w, "%s\t(round trip %v, node %d at %s)\n", cell(reply), rtt.Round(time.Microsecond), info.ID, cell(info.Listen))
				})
			})
		},
	}
}

func listenCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "listen",
		Short: "Print every message pinged to a node until interrupted",
		Long: "listen subscribes to the node's multi-echo and prints each message as\n" +
			"SEQ<TAB>MSG, in the order the node received them, until Ctrl-C. A message\n" +
			"that is not plain printable text is shown Go-quoted, one over 256 bytes shortened.\n\n" +
			`JSON: one object per message (a stream): {"seq": int, "msg": string}` + "\n" +
			`(a message that is not valid UTF-8 comes as "msg_base64" instead of "msg")`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			enc := newJSONEncoder(out)
			err = c.Listen(cmd.Context(), func(m client.Message) {
				if g.output == "json" {
					obj := map[string]any{"seq": m.Seq}
					setText(obj, "msg", m.Msg)
					_ = enc.Encode(obj)
					return
				}
				fmt.Fprintf(out, "%d\t%s\n", m.Seq, cell(m.Msg))
			})
			if errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				return nil // interrupted: the normal way to stop listening
			}
			return err
		},
	}
}
