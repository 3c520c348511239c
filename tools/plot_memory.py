#!/usr/bin/env python3
"""Plot a --memory-trace CSV of `nanoinfer generate` as a stacked area chart (PNG).

usage: tools/plot_memory.py trace.csv out.png
Needs matplotlib (pip install matplotlib)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(sys.argv[1])))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no steps")
    t = [float(r["time_ms"]) + float(r["step_ms"]) for r in rows]
    mib = lambda k: [int(r[k]) / 2**20 for r in rows]  # noqa: E731
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax.stackplot(t, mib("weights_bytes"), mib("kv_bytes"), mib("activation_bytes"),
                 labels=["weights", "KV cache (blocks held)", "activations (this step)"], alpha=0.8)
    ax.plot(t, [w + k for w, k in zip(mib("weights_bytes"), mib("kv_reserved_bytes"))], "k--",
            lw=1, label="weights + whole KV reservation")
    ax.set_ylabel("MiB")
    ax.set_title("memory in use per step")
    ax.legend(loc="lower right", fontsize=8)
    # The parts that move, on their own scale: KV blocks held and this step's activations.
    ax2.plot(t, mib("kv_bytes"), label="KV cache (blocks held)", color="C1")
    ax2.plot(t, mib("activation_bytes"), label="activations (this step)", color="C2")
    ax2.plot(t, mib("kv_reserved_bytes"), "k--", lw=1, label="KV reservation")
    ax2.set_xlabel("time (ms)")
    ax2.set_ylabel("MiB")
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
