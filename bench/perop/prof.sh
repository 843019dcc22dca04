#!/usr/bin/env bash
# prof.sh BINDIR MODE OP CLIENTS CONNS OUTDIR: what one operation costs on
# the leader and on the load generator (docs/BENCHMARKS.md, "What one
# operation costs on its own connection"). Starts a fresh 3-node cluster
# from BINDIR (raftnode, raftctl), runs bench/compare's load generator
# (COMPARE, default /tmp/cc-compare: `cd bench/compare && go build -o
# /tmp/cc-compare .`) for 2 s warmup + 8 s, and from 2.5 s on measures
# both processes for 4 s. OP is put or get.
# MODE: stat (perf stat: context switches, syscalls by kind, task-clock;
#       bench/perop/summarize.py OUTDIR divides by the operations),
#       strace (strace -c -f; slows the processes), perf (perf record -g;
#       bench/perop/buckets.py FILE groups samples by goroutine),
#       pprof (the leader's CPU profile and allocations, via --pprof).
# Run it under the bench lock: flock /work/bench.lock bench/perop/prof.sh ...
# Ports: BASE (default 7600) + 1..3 and + 51..53.
set -u
BINDIR=$1 MODE=$2 OP=$3 CL=$4 CO=$5 OUT=$6
BASE=${BASE:-7600}
W=$(mktemp -d /tmp/perop.XXXX)
mkdir -p "$OUT"
head -c 32 /dev/urandom | base64 > $W/secret; chmod 600 $W/secret
peers=""; eps=""
for n in 1 2 3; do peers="$peers${peers:+,}$n=127.0.0.1:$((BASE+n))"; eps="$eps${eps:+,}127.0.0.1:$((BASE+n))"; done
PIDS=()
for n in 1 2 3; do
  mkdir -p $W/d$n
  extra=()
  [ "$MODE" = pprof ] && extra=(--metrics-listen 127.0.0.1:$((BASE+50+n)) --pprof)
  $BINDIR/raftnode --id $n --listen 127.0.0.1:$((BASE+n)) --data-dir $W/d$n --peers "$peers" --cluster-secret-file $W/secret --anonymous client --log-level warn "${extra[@]}" > $W/n$n.log 2>&1 &
  PIDS+=($!)
done
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf $W; }
trap cleanup EXIT
${COMPARE:-/tmp/cc-compare} wait --system capraft --endpoints $eps --timeout 30s >/dev/null || { echo no cluster; exit 1; }
args=(--op put); [ $OP = get ] && args=(--op get)
${COMPARE:-/tmp/cc-compare} run --system capraft --endpoints $eps "${args[@]}" --clients $CL --conns $CO --keys 1000 --warmup 2s --duration 8s --quiet > $OUT/run.json &
CP=$!
sleep 2.5
# leader
LEADER_ID=$($BINDIR/raftctl --endpoints $eps status -o json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print([n["leader"] for n in d["nodes"] if n.get("leader")][0])')
LP=${PIDS[$((LEADER_ID-1))]}
echo "leader $LEADER_ID pid $LP client pid $CP" > $OUT/info
T=4
for p in $LP $CP; do grep ctxt /proc/$p/status | tr '\n' ' ' ; awk '{print "utime",$14,"stime",$15}' /proc/$p/stat; done > $OUT/before
case $MODE in
stat)
  perf stat -e context-switches,cpu-migrations,task-clock,raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_pwrite64,syscalls:sys_enter_sched_yield,syscalls:sys_enter_fdatasync -p $LP -o $OUT/perf-leader.txt -- sleep $T &
  perf stat -e context-switches,cpu-migrations,task-clock,raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_pwrite64,syscalls:sys_enter_sched_yield,syscalls:sys_enter_fdatasync -p $CP -o $OUT/perf-client.txt -- sleep $T &
  sleep $((T+1));;
strace)
  timeout -s INT $T strace -c -f -p $LP -o $OUT/strace-leader.txt 2>/dev/null &
  timeout -s INT $T strace -c -f -p $CP -o $OUT/strace-client.txt 2>/dev/null &
  sleep $((T+1));;
perf)
  perf record -g -F 999 -p $LP -o $OUT/perf-leader.data -- sleep $T 2>/dev/null &
  perf record -g -F 999 -p $CP -o $OUT/perf-client.data -- sleep $T 2>/dev/null &
  sleep $((T+1));;
pprof)
  U=http://127.0.0.1:$((BASE+50+LEADER_ID))/debug/pprof
  curl -s -o $OUT/allocs0.pprof "$U/allocs"
  curl -s -o $OUT/leader.pprof "$U/profile?seconds=$T"
  curl -s -o $OUT/allocs1.pprof "$U/allocs";;
esac
for p in $LP $CP; do grep ctxt /proc/$p/status | tr '\n' ' ' ; awk '{print "utime",$14,"stime",$15}' /proc/$p/stat; done > $OUT/after
wait $CP
cat $OUT/run.json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("ops/s", d["ops"]/d["seconds"])' 
