// Command raftctl is the command-line client for capraft clusters, in the
// spirit of etcdctl.
//
//	raftctl ping hello                    # prints echo:hello and the round trip
//	raftctl --endpoints 127.0.0.1:7000,127.0.0.1:7001 listen
//
// The endpoints default to $RAFTCTL_ENDPOINTS, else 127.0.0.1:7000. On
// failure raftctl prints one line on stderr saying what went wrong and what
// to try, and exits with status 1.
package main

import (
	"context"
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
	"github.com/capraft/capraft/cmd/internal/cli"
)

const defaultEndpoint = "127.0.0.1:7000"

type globals struct {
	endpoints   []string
	dialTimeout time.Duration
	timeout     time.Duration
	logLevel    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftctl: "+explain(err))
		os.Exit(1)
	}
}

// explain adds what to do next to the errors users meet most.
func explain(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return msg + " (is raftnode running at that address? set --endpoints)"
	case errors.Is(err, context.DeadlineExceeded):
		return msg + " (the node did not answer in time; is the address right? raise --timeout)"
	case errors.Is(err, client.ErrSubscriptionEnded):
		return msg
	default:
		return msg
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var g globals
	root := &cobra.Command{
		Use:           "raftctl",
		Short:         "Command-line client for capraft clusters",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       cli.Version(),
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	defaults := []string{defaultEndpoint}
	if env := os.Getenv("RAFTCTL_ENDPOINTS"); env != "" {
		defaults = strings.Split(env, ",")
	}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&g.endpoints, "endpoints", defaults, "comma-separated node addresses (host:port); default $RAFTCTL_ENDPOINTS")
	pf.DurationVar(&g.dialTimeout, "dial-timeout", 5*time.Second, "time allowed to connect to one endpoint")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "time allowed for a whole command (not for listen)")
	pf.StringVar(&g.logLevel, "log-level", "off", "client log level on stderr: off, "+cli.LogLevels)

	root.AddCommand(pingCommand(&g), listenCommand(&g))
	return root
}

// connect returns a client for the global flags.
func (g *globals) connect(stderr io.Writer) (*client.Client, error) {
	opts := []client.Option{client.WithDialTimeout(g.dialTimeout)}
	if g.logLevel != "off" {
		log, err := cli.NewLogger("raftctl", g.logLevel, false, stderr)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithLogger(log))
	}
	return client.New(g.endpoints, opts...)
}

func pingCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ping MSG",
		Short: "Send MSG to a node; print its reply and the round-trip time",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
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
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t(round trip %v, node %d at %s)\n", reply, rtt.Round(time.Microsecond), info.ID, info.Listen)
			return nil
		},
	}
}

func listenCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "listen",
		Short: "Print every message pinged to a node until interrupted",
		Long: "listen subscribes to the node's multi-echo and prints each message as\n" +
			"SEQ<TAB>MSG, in the order the node received them, until Ctrl-C.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			err = c.Listen(cmd.Context(), func(m client.Message) {
				fmt.Fprintf(out, "%d\t%s\n", m.Seq, m.Msg)
			})
			if errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				return nil // interrupted: the normal way to stop listening
			}
			return err
		},
	}
}
