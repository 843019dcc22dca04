package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

func endpointCommand(g *globals) *cobra.Command {
	ep := &cobra.Command{
		Use:   "endpoint",
		Short: "Check the endpoints (health)",
		Args:  exactArgs(0, "a subcommand: health"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("raftctl endpoint needs a subcommand: health")
		},
	}
	var maxLag uint64
	health := &cobra.Command{
		Use:   "health",
		Short: "Say whether every endpoint is healthy",
		Long: "endpoint health asks every endpoint for its status, in parallel, and says per\n" +
			"endpoint whether it is healthy: it answered (within --timeout), it knows a\n" +
			"leader, it has not stopped, and its state machine is at most --max-lag entries\n" +
			"behind the highest commit index any endpoint reported (LAG). TOOK is the time\n" +
			"the status call took. It exits 1 if any endpoint is unhealthy (77 if one\n" +
			"refused the credential).\n\n" +
			`JSON: {"healthy": bool (every endpoint), "endpoints": [{"endpoint": string,` + "\n" +
			`  "healthy": bool, "took_ms": float, "id": int, "role": string, "leader": int,` + "\n" +
			`  "applied": int, "lag": int, "error": string (why not healthy)}, ...]}`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				return endpointHealth(cmd, g, c, ctx, maxLag)
			})
		},
	}
	health.Flags().Uint64Var(&maxLag, "max-lag", 1000, "entries an endpoint's applied index may be behind the cluster's commit index and still count as healthy")
	ep.AddCommand(health)
	return ep
}

// healthRow is one endpoint's health.
type healthRow struct {
	endpoint string
	st       client.NodeStatus
	took     time.Duration
	err      error  // the status call failed
	problem  string // why it is unhealthy ("" if healthy)
	lag      uint64
}

func endpointHealth(cmd *cobra.Command, g *globals, c *client.Client, ctx context.Context, maxLag uint64) error {
	rows := make([]healthRow, len(g.endpoints))
	var wg sync.WaitGroup
	for i, e := range g.endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			st, err := c.Status(ctx, e)
			rows[i] = healthRow{endpoint: e, st: st, err: err, took: time.Since(start)}
		}()
	}
	wg.Wait()
	// The cluster's commit index as far as anyone knows: an endpoint
	// cut off from the others knows an old one, and lags behind it.
	var commit uint64
	for _, r := range rows {
		if r.err == nil {
			commit = max(commit, r.st.Commit)
		}
	}
	unhealthy := 0
	var denied error
	for i := range rows {
		r := &rows[i]
		switch {
		case r.err != nil:
			r.problem = r.err.Error()
			if denied == nil && errors.Is(r.err, client.ErrPermissionDenied) {
				denied = r.err
			}
		case r.st.Role == "stopped":
			r.problem = "stopped: " + r.st.StopReason
		case r.st.Leader == 0:
			r.problem = "no leader known"
		}
		if r.err == nil {
			r.lag = commit - min(commit, r.st.Applied)
			if r.problem == "" && r.lag > maxLag {
				r.problem = fmt.Sprintf("applied index %d is %d entries behind the cluster's commit index %d (more than --max-lag %d)", r.st.Applied, r.lag, commit, maxLag)
			}
		}
		if r.problem != "" {
			unhealthy++
		}
	}
	list := make([]map[string]any, len(rows))
	for i, r := range rows {
		m := map[string]any{"endpoint": r.endpoint, "healthy": r.problem == "", "took_ms": float64(r.took.Microseconds()) / 1000}
		if r.err == nil {
			m["id"], m["role"], m["leader"], m["applied"], m["lag"] = r.st.ID, r.st.Role, r.st.Leader, r.st.Applied, r.lag
		}
		if r.problem != "" {
			m["error"] = r.problem
		}
		list[i] = m
	}
	err := g.emit(cmd, map[string]any{"healthy": unhealthy == 0, "endpoints": list}, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENDPOINT\tHEALTHY\tTOOK\tID\tROLE\tLEADER\tLAG\tERROR")
		for _, r := range rows {
			healthy := "true"
			if r.problem != "" {
				healthy = "false"
			}
			took := r.took.Round(10 * time.Microsecond).String()
			if r.err != nil {
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t%s\n", r.endpoint, healthy, took, escapeText(r.problem))
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", r.endpoint, healthy, took, r.st.ID, cell(r.st.Role), r.st.Leader, r.lag, escapeText(r.problem))
		}
		_ = tw.Flush()
	})
	if err != nil {
		return err
	}
	if unhealthy > 0 {
		what := fmt.Sprintf("%d of %d endpoints unhealthy", unhealthy, len(rows))
		if denied != nil {
			return &reportedError{fmt.Errorf("%s; %w", what, denied)}
		}
		return &reportedError{errors.New(what)}
	}
	return nil
}
