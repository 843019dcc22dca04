# buckets.py PERF_DATA: prof.sh perf samples grouped by the goroutine they ran on.
import sys,subprocess,collections
rules=[
 ("capnp 250ms-Finish goroutine (client side of calls)","rpc.(*Conn).handleReturn.func1"),
 ("capnp sender goroutine: encode+writev","rpc.(*Conn).send."),
 ("capnp reader goroutine: read+decode","rpc.(*Conn).reader"),
 ("capnp receive goroutine: our inline call serving","inlineHook).Recv"),
 ("capnp receive goroutine: Finish handling","rpc.(*Conn).handleFinish"),
 ("capnp receive goroutine: other (dispatch, returns)","rpc.(*Conn).receive."),
 ("driver loop (raft, WAL, apply, answers)","driver.(*Driver)"),
 ("peer transport lanes","internal/transport."),
 ("client: caller goroutines (bench + client lib)","main.work"),
 ("codec Finish flush timer","flushHeld"),
 ("runtime: sysmon","runtime.sysmon"),
 ("runtime: scheduler / idle (findRunnable, park)","runtime.findRunnable"),
 ("runtime: scheduler / idle (findRunnable, park)","runtime.park_m"),
 ("runtime: scheduler / idle (findRunnable, park)","runtime.mcall"),
 ("runtime: GC","gcBgMarkWorker"),
 ("runtime: new goroutines / stack growth","runtime.morestack"),
 ("runtime: new goroutines / stack growth","runtime.newproc"),
]
out=subprocess.run(["perf","script","-i",sys.argv[1],"-F","ip,sym"],capture_output=True,text=True).stdout
c=collections.Counter(); tot=0
for block in out.split("\n\n"):
    b=block.strip()
    if not b: continue
    tot+=1
    for name,key in rules:
        if key in b: c[name]+=1; break
    else: c["other (kernel-only stacks: syscalls and interrupts without a Go frame)"]+=1
for k,v in c.most_common(): print(f"{100*v/tot:5.1f}%  {k}")
