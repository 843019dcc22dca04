#!/usr/bin/env bash
# run.sh: capraft against etcd with the same workloads, back to back, each
# run on a fresh 3-node cluster on 127.0.0.1 (each node its own data
# directory, fsync on: both systems' defaults), then the markdown table of
# ratios capraft/etcd per back-to-back pair.
#
#   bench/compare/run.sh [--rows "put:1:1 get:16:16 ..."] [--reps N]
#                        [--duration SECONDS] [--warmup SECONDS]
#                        [--value-size BYTES] [--keys N] [--out DIR]
#                        [--baseline CHECKOUT | --spread-ab]
#
# --baseline CHECKOUT compares capraft against capraft built from another
# checkout (a git worktree of an older commit, say) instead of etcd: the
# before/after of a change, interleaved the same way ("base" in the table).
# --spread-ab compares capraft's client with read spreading on (the
# "capraft" runs) against the same client with it off ("base"), the same
# binaries, interleaved the same way (client.WithReadSpreading).
#
# A row is workload:clients:conns, the workload one of
#   put        puts
#   get        linearizable gets (the keys are written first)
#   sget       serializable gets
#   mixedF     a fraction F of linearizable gets, the rest puts (mixed0.9)
# and conns the independent client connections the clients share (one
# client.New or clientv3.New each).
#
# Each repetition first measures the machine's floor (compare floor: a
# 4 KiB write + fdatasync and a loopback round trip, on the disk the data
# goes to), and the table sets the one-client rows against it.
#
# Defaults: the rows of issue 18's table and get:1:1 (its latency goal),
# 3 repetitions of 10 s after a 1 s warmup, 256-byte values, 10,000
# keys. Within a repetition each row runs capraft and etcd back to back; odd repetitions start with capraft,
# even ones with etcd. Every run is bounded in time and every cluster is
# torn down on exit, Ctrl-C included. Results (one JSON line per run),
# the table and the logs of failed runs go to --out (default: a new
# directory under ${TMPDIR:-/tmp}, printed at the end).
#
# Needs: go, and etcd 3.4 on PATH (Debian: apt-get install -y etcd-server).
# capraft runs as scripts/local-cluster.sh runs it: members prove a cluster
# secret made for the run; clients need no credential (--anonymous client),
# as etcd without auth. Ports: COMPARE_BASE_PORT (default 17300) + 1..3
# for capraft, + 11..13 and 21..23 for etcd's client and peer URLs.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

ROWS="put:1:1 get:1:1 put:16:16 put:64:16 put:256:16 put:64:1 put:256:1 put:1024:16 get:16:16 get:256:16 get:256:1 sget:256:16 mixed0.9:64:16"
REPS=3
DURATION=10
WARMUP=1
VALUE_SIZE=256
KEYS=10000
OUT=""
BASELINE=""
SPREAD_AB=0
BASE=${COMPARE_BASE_PORT:-17300}
COMMAND="$0 $*"

die() { echo "run.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case "$1" in
	--rows) ROWS=${2:?}; shift 2 ;;
	--reps) REPS=${2:?}; shift 2 ;;
	--duration) DURATION=${2:?}; shift 2 ;;
	--warmup) WARMUP=${2:?}; shift 2 ;;
	--value-size) VALUE_SIZE=${2:?}; shift 2 ;;
	--keys) KEYS=${2:?}; shift 2 ;;
	--out) OUT=${2:?}; shift 2 ;;
	--baseline) BASELINE=$(cd "${2:?}" && pwd); shift 2 ;;
	--spread-ab) SPREAD_AB=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
for v in REPS DURATION WARMUP VALUE_SIZE KEYS; do
	case "${!v}" in '' | *[!0-9]*) die "--$(echo "$v" | tr 'A-Z_' 'a-z-') wants a whole number, got '${!v}'" ;; esac
done
[ "$REPS" -ge 1 ] && [ "$DURATION" -ge 1 ] || die "--reps and --duration must be at least 1"
[ -z "$BASELINE" ] || [ $SPREAD_AB -eq 0 ] || die "--baseline and --spread-ab do not go together"
[ -n "$BASELINE" ] || [ $SPREAD_AB -eq 1 ] || command -v etcd >/dev/null || die "etcd is not on PATH (Debian: apt-get install -y etcd-server)"
command -v go >/dev/null || die "go is not on PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/capraft-compare.XXXXXX")
[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/capraft-compare-results.XXXXXX")
mkdir -p "$OUT/logs"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
BIN="$WORK/bin"
PIDS=()     # the running cluster's processes (only ever ours)
FAILED=0

# stop_cluster ends the processes this script started: SIGTERM, then
# SIGKILL for any still running 10 s later; then deletes their data.
stop_cluster() {
	local pid i
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	PIDS=()
	rm -rf "$WORK/data"
}
cleanup() {
	stop_cluster
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_ports() {
	local p
	for p in "$@"; do port_free "$p" || die "port 127.0.0.1:$p is in use (move the range with COMPARE_BASE_PORT)"; done
}

start_base() { RAFTNODE_BIN="$BIN/raftnode-base" start_capraft; }

start_capraft() {
	local n peers="" eps="" bin=${RAFTNODE_BIN:-$BIN/raftnode}
	for n in 1 2 3; do
		peers="$peers${peers:+,}$n=127.0.0.1:$((BASE + n))"
		eps="$eps${eps:+,}127.0.0.1:$((BASE + n))"
	done
	check_ports $((BASE + 1)) $((BASE + 2)) $((BASE + 3))
	for n in 1 2 3; do
		mkdir -p "$WORK/data/capraft$n"
		"$bin" --id "$n" --listen "127.0.0.1:$((BASE + n))" --data-dir "$WORK/data/capraft$n" \
			--peers "$peers" --cluster-secret-file "$WORK/cluster.secret" --anonymous client \
			--log-level warn >"$WORK/data/capraft$n.log" 2>&1 &
		PIDS+=($!)
	done
	ENDPOINTS=$eps
}

start_etcd() {
	local n cluster="" eps=""
	for n in 1 2 3; do
		cluster="$cluster${cluster:+,}n$n=http://127.0.0.1:$((BASE + 20 + n))"
		eps="$eps${eps:+,}127.0.0.1:$((BASE + 10 + n))"
	done
	check_ports $((BASE + 11)) $((BASE + 12)) $((BASE + 13)) $((BASE + 21)) $((BASE + 22)) $((BASE + 23))
	for n in 1 2 3; do
		mkdir -p "$WORK/data/etcd$n"
		etcd --name "n$n" --data-dir "$WORK/data/etcd$n" \
			--listen-client-urls "http://127.0.0.1:$((BASE + 10 + n))" \
			--advertise-client-urls "http://127.0.0.1:$((BASE + 10 + n))" \
			--listen-peer-urls "http://127.0.0.1:$((BASE + 20 + n))" \
			--initial-advertise-peer-urls "http://127.0.0.1:$((BASE + 20 + n))" \
			--initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "compare-$$" \
			--logger zap --log-level warn >"$WORK/data/etcd$n.log" 2>&1 &
		PIDS+=($!)
	done
	ENDPOINTS=$eps
}

# one_run SYSTEM ROW REP: a fresh cluster, one measured run, teardown.
one_run() {
	local system=$1 row=$2 rep=$3 wl clients conns args=() client=$1
	[ "$system" = base ] && client=capraft
	IFS=: read -r wl clients conns <<<"$row"
	case "$wl" in
	put) args=(--op put) ;;
	get) args=(--op get) ;;
	sget) args=(--op get --serializable) ;;
	mixed*) args=(--op mixed --read-frac "${wl#mixed}") ;;
	*) die "row $row: unknown workload $wl" ;;
	esac
	if [ $SPREAD_AB -eq 1 ]; then
		case "$system" in
		capraft) args+=(--read-spreading on) ;;
		base) args+=(--read-spreading off) ;;
		esac
	fi
	echo "== rep $rep, $row, $system" >&2
	"start_$system"
	local pids
	pids=$(IFS=,; echo "${PIDS[*]}")
	local ok=1
	# --foreground keeps compare in this script's process group, so that
	# Ctrl-C reaches it too (timeout otherwise gives it a group of its own).
	if ! timeout --foreground 60 "$BIN/compare" wait --system "$client" --endpoints "$ENDPOINTS" --timeout 30s; then
		ok=0
	elif ! timeout --foreground $((WARMUP + DURATION + 180)) "$BIN/compare" run --system "$client" --label "$system" --endpoints "$ENDPOINTS" \
		"${args[@]}" --clients "$clients" --conns "$conns" --value-size "$VALUE_SIZE" --keys "$KEYS" \
		--warmup "${WARMUP}s" --duration "${DURATION}s" --seed "$rep" --rep "$rep" --pids "$pids" --quiet \
		>>"$RESULTS"; then
		ok=0
	fi
	if [ $ok -eq 0 ]; then
		FAILED=$((FAILED + 1))
		local d="$OUT/logs/rep$rep-${row//:/_}-$system"
		mkdir -p "$d"
		cp "$WORK"/data/*.log "$d/" 2>/dev/null || true
		echo "run.sh: rep $rep, $row, $system failed; node logs in $d" >&2
	fi
	stop_cluster
}

echo "building raftnode and compare ..." >&2
# The commits measured: read now, as the binaries are built (the trees
# may move on while the runs go).
rev() {
	local r
	r=$(git -C "$1" rev-parse --short HEAD 2>/dev/null) || { echo '(no git)'; return; }
	[ -z "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ] || r="$r+changes"
	echo "$r"
}
REV=$(rev "$ROOT")
[ -z "$BASELINE" ] || BASE_REV=$(rev "$BASELINE")
mkdir -p "$BIN"
(cd "$ROOT" && go build -o "$BIN/raftnode" ./cmd/raftnode)
(cd "$HERE" && go build -o "$BIN/compare" .)
OTHER=etcd
if [ -n "$BASELINE" ]; then
	(cd "$BASELINE" && go build -o "$BIN/raftnode-base" ./cmd/raftnode)
	OTHER=base
elif [ $SPREAD_AB -eq 1 ]; then
	cp "$BIN/raftnode" "$BIN/raftnode-base"
	OTHER=base
fi
(umask 077 && head -c 32 /dev/urandom | base64 >"$WORK/cluster.secret")

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for rep in $(seq 1 "$REPS"); do
	# The machine's floor (issue 18): measured each repetition, since the
	# disk and the scheduler drift; the table shows the median.
	"$BIN/compare" floor --dir "$WORK" --samples 1000 >>"$RESULTS" || FAILED=$((FAILED + 1))
	for row in $ROWS; do
		if [ $((rep % 2)) -eq 1 ]; then
			one_run capraft "$row" "$rep"
			one_run "$OTHER" "$row" "$rep"
		else
			one_run "$OTHER" "$row" "$rep"
			one_run capraft "$row" "$rep"
		fi
	done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

{
	echo "command: $COMMAND"
	echo "started $STARTED, finished $(date -u +%Y-%m-%dT%H:%M:%SZ); load average before $LOAD_BEFORE, after $LOAD_AFTER"
	echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	[ $SPREAD_AB -eq 0 ] || echo "capraft: the client's reads spread over the endpoints; base: the same client and nodes with read spreading off"
	[ -z "$BASELINE" ] || echo "base: capraft $BASE_REV from $BASELINE"
	if [ "$OTHER" = base ]; then
		echo "capraft $REV, $(go version | cut -d' ' -f3)"
	else
		echo "capraft $REV, $(go version | cut -d' ' -f3); etcd $(etcd --version | awk '/etcd Version/ {print $3}'), client go.etcd.io/etcd/client/v3 $(cd "$HERE" && go list -m -f '{{.Version}}' go.etcd.io/etcd/client/v3)"
	fi
	echo "$REPS repetitions x ${DURATION}s (after a ${WARMUP}s warmup), ${VALUE_SIZE}-byte values, $KEYS keys; ratios are capraft/$OTHER per back-to-back pair, median (range)"
	echo
	"$BIN/compare" table "$RESULTS"
} | tee "$OUT/table.md"
echo >&2
echo "results: $RESULTS; table: $OUT/table.md" >&2
if [ $FAILED -gt 0 ]; then
	echo "run.sh: $FAILED runs failed (see $OUT/logs)" >&2
	exit 1
fi
