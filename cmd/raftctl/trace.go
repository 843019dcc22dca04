package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func traceCommand(g *globals) *cobra.Command {
	trace := &cobra.Command{
		Use:   "trace",
		Short: "Work with nodes' timeline traces (merge)",
		Args:  exactArgs(0, "a subcommand: merge"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("raftctl trace needs a subcommand: merge")
		},
	}
	var out string
	merge := &cobra.Command{
		Use:   "merge FILE...",
		Short: "Line up several nodes' traces (raftnode --trace) on one timeline",
		Long: "trace merge reads the trace files nodes wrote with raftnode --trace (Chrome\n" +
			"trace-event JSON; a file cut short by a crash is read up to its last event)\n" +
			"and writes one trace holding every node's events, each node a process of its\n" +
			"own, to --out (default: stdout). The events carry wall-clock timestamps, so\n" +
			"they line up when the nodes' clocks agree (one machine, or NTP). Open the\n" +
			"result in https://ui.perfetto.dev or chrome://tracing. The output is the\n" +
			"trace itself, whatever -o says.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("trace merge needs one or more trace files (raftnode --trace FILE)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var events []json.RawMessage
			for _, path := range args {
				evs, err := readTrace(path)
				if err != nil {
					return err
				}
				events = append(events, evs...)
			}
			var w io.Writer = cmd.OutOrStdout()
			if out != "" {
				f, err := os.Create(out)
				if err != nil {
					return fmt.Errorf("trace merge: %w", err)
				}
				defer f.Close()
				w = f
			}
			if err := writeTrace(w, events); err != nil {
				return fmt.Errorf("trace merge: write %s: %w", out, err)
			}
			if out != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "merged %d events from %d files into %s\n", len(events), len(args), out)
			}
			return nil
		},
	}
	merge.Flags().StringVar(&out, "out", "", "file to write the merged trace to (default: stdout)")
	trace.AddCommand(merge)
	return trace
}

// readTrace reads one node's trace: a JSON array of events, or
// {"traceEvents": [...]}, possibly cut short after any event (the format
// allows a missing "]"). Empty objects (the writer's last) are dropped.
func readTrace(path string) ([]json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trace merge: %w", err)
	}
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("{")) {
		var obj struct {
			TraceEvents []json.RawMessage `json:"traceEvents"`
		}
		if err := json.Unmarshal(b, &obj); err != nil {
			return nil, fmt.Errorf("trace merge: %s: not a trace (%v)", path, err)
		}
		return dropEmpty(obj.TraceEvents), nil
	}
	if !bytes.HasSuffix(b, []byte("]")) {
		// Cut short: end the array after the last whole event.
		if i := bytes.LastIndex(b, []byte("},")); i >= 0 {
			b = append(b[:i+1:i+1], ']')
		}
	}
	var events []json.RawMessage
	if err := json.Unmarshal(b, &events); err != nil {
		return nil, fmt.Errorf("trace merge: %s: not a trace (%v)", path, err)
	}
	return dropEmpty(events), nil
}

func dropEmpty(events []json.RawMessage) []json.RawMessage {
	out := events[:0]
	for _, e := range events {
		if !bytes.Equal(bytes.TrimSpace(e), []byte("{}")) {
			out = append(out, e)
		}
	}
	return out
}

// writeTrace writes events as {"traceEvents": [...]}, one per line.
func writeTrace(w io.Writer, events []json.RawMessage) error {
	var buf bytes.Buffer
	buf.WriteString("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")
	for i, e := range events {
		buf.Write(e)
		if i < len(events)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
		if buf.Len() > 1<<20 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return err
			}
			buf.Reset()
		}
	}
	buf.WriteString("]}\n")
	_, err := w.Write(buf.Bytes())
	return err
}
