// Package e2e holds end-to-end tests of capraft: real raftnode processes on
// loopback, killed with SIGKILL, partitioned through fault proxies, with
// every client operation recorded and checked.
//
// TestMain builds cmd/raftnode once per run (with the race detector when
// E2E_RACE=1). Every test prints its seed; rerun one with
//
//	go test ./e2e -run '^TestName$' -seed N -v
//
// E2E_KEEP=1 keeps each cluster's data and logs in a temp directory whose
// path is logged. The harness lives in the subpackages: cluster (the
// processes), faultproxy (the network) and history (the porcupine models
// of registers and of transactions, and the watch checker).
package e2e
