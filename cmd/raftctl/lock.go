package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
)

// defaultRecipeTTL is the session TTL of lock and elect: how long a
// lock or leadership outlives a raftctl that dies.
const defaultRecipeTTL = 10 * time.Second

// commandWaitDelay is how long a command whose lock was lost has to
// stop after SIGTERM before it is killed.
const commandWaitDelay = 5 * time.Second

// exitCodeError is a failure whose exit status is given: that of the
// command lock ran.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// errLost is the error of lock and elect when the session ends while
// they hold what they won.
var errLost = fmt.Errorf("the lease could not be renewed in time, or was revoked: %w", concurrency.ErrSessionExpired)

// openSession opens a session of ttl on c, bounded by --timeout.
func (g *globals) openSession(cmd *cobra.Command, c *client.Client, ttl time.Duration) (*concurrency.Session, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	return concurrency.NewSession(ctx, c, concurrency.WithTTL(ttl))
}

// closeSession revokes s, bounded by --timeout (even once interrupted),
// and returns err, or the revoke's failure if err is nil.
func (g *globals) closeSession(cmd *cobra.Command, s *concurrency.Session, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), g.timeout)
	defer cancel()
	if cerr := s.Close(ctx); err == nil {
		return cerr
	}
	return err
}

func lockCommand(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "lock NAME [-- COMMAND [ARG...]]",
		Short: "Take the lock NAME; hold it while COMMAND runs, or until interrupted",
		Long: "lock waits for the lock NAME (waiters are served in the order they came),\n" +
			"then, without COMMAND, prints its key and fencing token and holds it until\n" +
			"Ctrl-C:\n  KEY<TAB>revision=N\n" +
			"With COMMAND, it runs COMMAND while holding the lock, with RAFTCTL_LOCK_KEY and\n" +
			"RAFTCTL_LOCK_REVISION in its environment, releases the lock when it ends and\n" +
			"exits with its status.\n\n" +
			"The lock is held by a session: a lease of --ttl kept alive while raftctl runs.\n" +
			"If raftctl dies, the cluster releases the lock when the lease expires. If the\n" +
			"session ends while the lock is held (the cluster was unreachable for a TTL),\n" +
			"COMMAND gets SIGTERM (and SIGKILL 5s later) and lock exits 1.\n\n" +
			"The revision is the lock's fencing token: every later holder's is larger.\n" +
			"Pass it to what the lock guards, and have it refuse a token lower than the\n" +
			"highest it has seen.\n\n" +
			`JSON (without COMMAND): {"key": string, "revision": int, "lease": int}`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("lock takes a lock NAME, then optionally -- COMMAND [ARG...]")
			}
			if dash := cmd.ArgsLenAtDash(); dash > 1 || (dash == -1 && len(args) > 1) {
				return usagef("lock takes one NAME; put the command after --: raftctl lock NAME -- COMMAND [ARG...]")
			}
			return checkKeyLen("lock NAME", args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < time.Second {
				return usagef("--ttl %v: want at least 1s", ttl)
			}
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := g.openSession(cmd, c, ttl)
			if err != nil {
				return err
			}
			m := concurrency.NewMutex(s, args[0])
			// Waiting for the lock takes as long as it takes: until
			// interrupted.
			if err := m.Lock(cmd.Context()); err != nil {
				if cmd.Context().Err() != nil {
					err = fmt.Errorf("interrupted while waiting for the lock %s: %w", cell(args[0]), cmd.Context().Err())
				}
				return g.closeSession(cmd, s, aboutKey(err, args[0]))
			}
			if len(args) > 1 {
				err = runLocked(cmd, s, m, args[1:])
			} else {
				err = g.emit(cmd, map[string]any{"key": m.Key(), "revision": m.Revision(), "lease": s.Lease()},
					func(w io.Writer) { fmt.Fprintf(w, "%s\trevision=%d\n", cell(m.Key()), m.Revision()) })
				if err == nil {
					select {
					case <-cmd.Context().Done(): // interrupted: the normal way to let go
					case <-s.Done():
						err = fmt.Errorf("lock %s lost: %w", cell(args[0]), errLost)
					}
				}
			}
			// The revoke deletes the lock's key: no Unlock needed.
			return g.closeSession(cmd, s, err)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", defaultRecipeTTL, "session TTL: how long the lock outlives a raftctl that dies")
	return cmd
}

// runLocked runs argv while m holds the lock, stopping it if the session
// ends, and returns its exit status as an *exitCodeError when not 0.
func runLocked(cmd *cobra.Command, s *concurrency.Session, m *concurrency.Mutex, argv []string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := context.AfterFunc(cmd.Context(), cancel) // interrupted: the command is asked to stop too
	defer stop()
	lost := make(chan bool, 1)
	go func() {
		select {
		case <-s.Done():
			lost <- ctx.Err() == nil
			cancel()
		case <-ctx.Done():
			lost <- false
		}
	}()
	run := exec.CommandContext(ctx, argv[0], argv[1:]...)
	run.Stdin, run.Stdout, run.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	run.Env = append(os.Environ(), fmt.Sprintf("RAFTCTL_LOCK_KEY=%s", m.Key()), fmt.Sprintf("RAFTCTL_LOCK_REVISION=%d", m.Revision()))
	run.Cancel = func() error { return run.Process.Signal(syscall.SIGTERM) }
	run.WaitDelay = commandWaitDelay
	err := run.Run()
	cancel()
	if <-lost {
		return fmt.Errorf("lock lost while %s ran: %w", cell(argv[0]), errLost)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return &exitCodeError{code: ee.ExitCode(), err: fmt.Errorf("%s exited with status %d", cell(argv[0]), ee.ExitCode())}
	default:
		return fmt.Errorf("run %s: %w", cell(argv[0]), err)
	}
}

func electCommand(g *globals) *cobra.Command {
	var ttl time.Duration
	var listen bool
	cmd := &cobra.Command{
		Use:   "elect NAME [VALUE]",
		Short: "Campaign in the election NAME with VALUE, or --listen to its leaders",
		Long: "elect campaigns in the election NAME with VALUE and prints every leader as\n" +
			"it takes over, until Ctrl-C, which resigns (candidates lead in the order they\n" +
			"came). With --listen it only prints the leaders. Each leader is a line\n" +
			"  REVISION<TAB>KEY<TAB>VALUE\n" +
			"where REVISION is its fencing token (larger for every later leader).\n\n" +
			"The candidacy is held by a session: a lease of --ttl kept alive while raftctl\n" +
			"runs. If raftctl dies, the cluster ends its leadership when the lease expires;\n" +
			"if the session ends while raftctl runs, elect exits 1.\n\n" +
			`JSON: one object per leader (a stream): {"revision": int, "key": string, "value": string, "self": bool}` + "\n" +
			binaryJSONHelp,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case listen && len(args) != 1:
				return usagef("elect --listen takes the election NAME only")
			case !listen && len(args) != 2:
				return usagef("elect takes NAME and VALUE to campaign, or --listen and NAME to print the leaders")
			}
			return checkKeyLen("election NAME", args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < time.Second {
				return usagef("--ttl %v: want at least 1s", ttl)
			}
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := g.openSession(cmd, c, ttl)
			if err != nil {
				return err
			}
			err = elect(cmd, g, s, args, listen)
			return g.closeSession(cmd, s, aboutKey(err, args[0]))
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", defaultRecipeTTL, "session TTL: how long a leadership outlives a raftctl that dies")
	cmd.Flags().BoolVarP(&listen, "listen", "l", false, "print the leaders without campaigning")
	return cmd
}

// elect prints the leaders of the election args[0] and, unless listen,
// campaigns with args[1], until interrupted or the session ends.
func elect(cmd *cobra.Command, g *globals, s *concurrency.Session, args []string, listen bool) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	e := concurrency.NewElection(s, args[0])
	campaign := make(chan error, 1)
	if !listen {
		go func() { campaign <- e.Campaign(ctx, []byte(args[1])) }()
	}
	out := cmd.OutOrStdout()
	leaders := e.Observe(ctx)
	for {
		select {
		case l, ok := <-leaders:
			if !ok {
				if cmd.Context().Err() != nil {
					return nil // interrupted: the normal way to stop
				}
				return fmt.Errorf("observe the election %s: the watch ended (see --log-level debug)", cell(args[0]))
			}
			if g.output == "json" {
				obj := map[string]any{"revision": l.CreateRevision, "self": l.Key == e.Key()}
				setText(obj, "key", l.Key)
				setText(obj, "value", l.Value)
				_ = newJSONEncoder(out).Encode(obj)
				continue
			}
			fmt.Fprintf(out, "%d\t%s\t%s\n", l.CreateRevision, cell(l.Key), cell(string(l.Value)))
		case err := <-campaign:
			if err != nil {
				if cmd.Context().Err() != nil {
					return nil
				}
				return err
			}
			campaign = nil // elected: hold it until interrupted
		case <-s.Done():
			return fmt.Errorf("election %s: %w", cell(args[0]), errLost)
		case <-cmd.Context().Done():
			if !listen {
				// Resign before the session's revoke, so that the next
				// leader takes over even if the revoke fails.
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), g.timeout)
				defer rcancel()
				return e.Resign(rctx)
			}
			return nil
		}
	}
}
