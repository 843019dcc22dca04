#!/usr/bin/env bash
# local-cluster.sh: run a 3-node capraft cluster on this machine.
#
#   scripts/local-cluster.sh start         build bin/raftnode and bin/raftctl, start the nodes that are not running
#   scripts/local-cluster.sh status        which nodes run, then `raftctl status`
#   scripts/local-cluster.sh kill-leader   kill -9 the current leader (to watch a failover)
#   scripts/local-cluster.sh kill N        kill -9 node N
#   scripts/local-cluster.sh stop          stop every node (SIGTERM, then SIGKILL after 10s)
#   scripts/local-cluster.sh clean         stop, then delete ./local-cluster (all data)
#
# Nodes 1..3 listen on 127.0.0.1:7001..7003 (LOCAL_CLUSTER_BASE_PORT=7000
# moves them); node N keeps its data in ./local-cluster/nodeN and its pid
# and log in ./local-cluster/nodeN.pid and ./local-cluster/nodeN.log.
# Every command is idempotent: start starts only what is not running (so
# it also restarts a killed node with its data), stop stops only what runs.
#
# The nodes prove to each other that they are members with a cluster
# secret the script makes once (./local-cluster/cluster.secret, mode
# 0600): nothing else on this machine can forge their Raft messages.
# Clients and operators on this machine need no credential (--anonymous
# operator): this is a development cluster on loopback. docs/SECURITY.md
# shows a cluster where they do.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=${LOCAL_CLUSTER_BASE_PORT:-7000}
DIR="$ROOT/local-cluster"
BIN="$ROOT/bin"
NODES="1 2 3"
SECRET="$DIR/cluster.secret"

# make_secret creates the cluster secret once: 32 random bytes, base64.
make_secret() {
	[ -s "$SECRET" ] && return 0
	(umask 077 && head -c 32 /dev/urandom | base64 >"$SECRET")
}

addr() { echo "127.0.0.1:$((BASE + $1))"; }
peers() {
	local out="" n
	for n in $NODES; do out="$out${out:+,}$n=$(addr "$n")"; done
	echo "$out"
}
endpoints() {
	local out="" n
	for n in $NODES; do out="$out${out:+,}$(addr "$n")"; done
	echo "$out"
}

# pid_of N prints node N's pid if it is running (and is a raftnode).
pid_of() {
	local f="$DIR/node$1.pid" pid
	[ -f "$f" ] || return 1
	pid=$(cat "$f")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	case "$(ps -p "$pid" -o comm= 2>/dev/null)" in
	*raftnode*) echo "$pid" ;;
	*) return 1 ;; # a stale pid file whose number was reused
	esac
}

build() {
	echo "building bin/raftnode and bin/raftctl ..."
	mkdir -p "$BIN"
	go build -o "$BIN/" ./cmd/raftnode ./cmd/raftctl
}

start_node() {
	local n=$1 pid log
	if pid=$(pid_of "$n"); then
		echo "node $n already running (pid $pid, $(addr "$n"))"
		return 0
	fi
	mkdir -p "$DIR/node$n"
	log="$DIR/node$n.log"
	echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) start" >>"$log"
	nohup "$BIN/raftnode" --id "$n" --listen "$(addr "$n")" --data-dir "$DIR/node$n" \
		--peers "$(peers)" --cluster-secret-file "$SECRET" --anonymous operator >>"$log" 2>&1 &
	pid=$!
	echo "$pid" >"$DIR/node$n.pid"
	# Wait until it logs "serving" (at most 10 s).
	local i=0
	while [ $i -lt 100 ]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "node $n exited at startup; last lines of $log:" >&2
			tail -n 20 "$log" >&2
			rm -f "$DIR/node$n.pid"
			return 1
		fi
		if tail -n 50 "$log" | grep -q 'serving'; then
			echo "node $n started (pid $pid, $(addr "$n"), data $DIR/node$n, log $log)"
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	echo "node $n (pid $pid) did not log \"serving\" within 10s; see $log" >&2
	return 1
}

stop_node() {
	local n=$1 pid i=0
	if ! pid=$(pid_of "$n"); then
		echo "node $n not running"
		rm -f "$DIR/node$n.pid"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "node $n (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$DIR/node$n.pid"
	echo "node $n stopped"
}

kill_node() {
	local n=$1 pid
	if ! pid=$(pid_of "$n"); then
		echo "node $n not running" >&2
		return 1
	fi
	kill -KILL "$pid"
	rm -f "$DIR/node$n.pid"
	echo "killed node $n (pid $pid) with SIGKILL; \`$0 start\` restarts it with its data"
}

# leader prints the id of the node that reports itself leader, waiting up
# to 5 s for an election to finish.
leader() {
	local n out i=0
	while [ $i -lt 50 ]; do
		for n in $NODES; do
			pid_of "$n" >/dev/null || continue
			out=$("$BIN/raftctl" --endpoints "$(addr "$n")" --timeout 2s -o json status 2>/dev/null) || continue
			if printf '%s' "$out" | grep -q '"role":"leader"'; then
				echo "$n"
				return 0
			fi
		done
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

cmd=${1:-}
case "$cmd" in
start)
	build
	mkdir -p "$DIR"
	make_secret
	for n in $NODES; do start_node "$n"; done
	if l=$(leader); then
		echo "node $l leads"
	else
		echo "no leader elected yet; check the logs in $DIR" >&2
	fi
	echo
	echo "try: bin/raftctl --endpoints $(endpoints) status"
	;;
stop)
	for n in $NODES; do stop_node "$n"; done
	;;
status)
	for n in $NODES; do
		if pid=$(pid_of "$n"); then
			echo "node $n: running, pid $pid, $(addr "$n")"
		else
			echo "node $n: not running"
		fi
	done
	if [ ! -x "$BIN/raftctl" ]; then
		echo "bin/raftctl not built yet: run \`$0 start\`" >&2
		exit 1
	fi
	echo
	"$BIN/raftctl" --endpoints "$(endpoints)" status
	;;
kill-leader)
	[ -x "$BIN/raftctl" ] || { echo "bin/raftctl not built yet: run \`$0 start\`" >&2; exit 1; }
	running=0
	for n in $NODES; do pid_of "$n" >/dev/null && running=$((running + 1)); done
	if [ $running -eq 0 ]; then
		echo "no node is running: start them with \`$0 start\`" >&2
		exit 1
	fi
	if ! l=$(leader); then
		echo "no node reports itself leader right now (see \`$0 status\`); kill one by id with \`$0 kill N\`" >&2
		exit 1
	fi
	echo "leader is node $l"
	kill_node "$l"
	;;
kill)
	case "${2:-}" in
	1 | 2 | 3) kill_node "$2" ;;
	*) echo "usage: $0 kill 1|2|3" >&2; exit 2 ;;
	esac
	;;
clean)
	for n in $NODES; do stop_node "$n"; done
	rm -rf "$DIR"
	echo "removed $DIR"
	;;
*)
	echo "usage: $0 start|stop|status|kill-leader|kill N|clean" >&2
	exit 2
	;;
esac
