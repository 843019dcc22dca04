# summarize.py OUTDIR...: prof.sh stat results per operation.
import sys,re,json,os
for d in sys.argv[1:]:
    run=json.load(open(d+"/run.json")); rate=run["ops"]/run["seconds"]; ops=rate*4
    out=[f"{os.path.basename(d)} ops/s={rate:.0f}"]
    for who in ("leader","client"):
        vals={}
        for line in open(f"{d}/perf-{who}.txt"):
            m=re.match(r"\s*([\d,\.]+)\s+(msec )?(\S+)",line)
            if m and not line.strip().startswith("#"):
                try: vals[m.group(3).replace("syscalls:sys_enter_","").replace("raw_syscalls:sys_enter","syscalls")]=float(m.group(1).replace(",",""))
                except: pass
        s=" ".join(f"{k}={v/ops:.2f}" for k,v in vals.items() if k not in ("task-clock",))
        out.append(f"  {who}: cpu_us/op={vals.get('task-clock',0)*1000/ops:.0f} {s}")
    print("\n".join(out))
