"""The stall samples of one kernel, from Nsight Compute's source page exported as CSV:
    ncu --set full --clock-control none --kernel-name regex:NAME --launch-count 1 -o rep PROGRAM
    ncu --import rep.ncu-rep --page source --print-source sass --csv > rep.csv
    python3 tools/bench/ncu_sass_top.py rep.csv
prints the samples per stall reason over the kernel and the 25 SASS instructions with the most
samples, each with its three main reasons."""
import csv
import sys


def num(x):
    try:
        return float(x.replace(",", ""))
    except ValueError:
        return 0.0


def main(path):
    rows = list(csv.reader(open(path)))
    for i, r in enumerate(rows):
        if "Source" in r and any("Sampling" in c for c in r):
            hdr, data = r, [x for x in rows[i + 1:] if len(x) == len(r)]
            break
    else:
        sys.exit(f"{path}: no source-page header with stall samples")
    col = {c: j for j, c in enumerate(hdr)}
    samples = next(c for c in hdr if "Sampling (All" in c)
    reasons = [c for c in hdr if c.lower().startswith("stall_")]
    total = sum(num(r[col[samples]]) for r in data)
    print(f"total samples {total:.0f}")
    per_reason = {c: sum(num(r[col[c]]) for r in data) for c in reasons}
    for c, v in sorted(per_reason.items(), key=lambda x: -x[1])[:12]:
        print(f"  {c:40s} {v:10.0f} {100 * v / max(total, 1):5.1f}%")
    data.sort(key=lambda r: -num(r[col[samples]]))
    for r in data[:25]:
        top = sorted(((num(r[col[c]]), c) for c in reasons), reverse=True)[:3]
        print(f"{num(r[col[samples]]):7.0f} {r[col['Source']][:60]:60s} "
              + ", ".join(f"{c}={v:.0f}" for v, c in top if v > 0))


if __name__ == "__main__":
    main(sys.argv[1])
