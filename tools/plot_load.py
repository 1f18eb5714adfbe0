#!/usr/bin/env python3
"""Plots of `exitrt loadtest --output FILE.json`.

    python3 tools/plot_load.py RESULT.json [RESULT.json ...] [--out DIR]

Per file, by its "kind":
  peak      -> STEM-p99-vs-qps.png: the latency percentile of every trial against the
               arrival rate, one line per policy, the objective and each policy's peak marked
  scenario  -> STEM-timeline.png: per window, p99 and accuracy with the controller off and
               on, the offered rate, and the operating point the controller chose
  loadtest  -> STEM-timeline.png: per window, p50 and p99 latency and throughput per run

Needs matplotlib (Debian: apt-get install python3-matplotlib; or pip install matplotlib).
Without it the script says so and writes nothing (exit status 0).
"""
import argparse
import json
import math
import os
import sys


def _num(v):
    return float("nan") if v is None else float(v)


def _stem(path, out_dir):
    base = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(out_dir or os.path.dirname(os.path.abspath(path)), base)


def plot_peak(plt, doc, stem):
    fig, ax = plt.subplots(figsize=(8, 5))
    slo = doc.get("slo_ms")
    pct = doc.get("percentile", 99)
    for pk in doc["peaks"]:
        trials = sorted(pk["trials"], key=lambda t: t["qps"])
        qps = [t["qps"] for t in trials]
        lat = [_num(t["latency_q_ms"]) for t in trials]
        line, = ax.plot(qps, lat, marker="o", label=pk["policy"])
        if pk.get("found"):
            at = pk["at_peak"]
            ax.plot([at["qps"]], [_num(at["latency_q_ms"])], marker="*", markersize=16, color=line.get_color())
            ax.annotate("%.0f" % pk["peak_qps"], (at["qps"], _num(at["latency_q_ms"])), textcoords="offset points",
                        xytext=(4, -12), fontsize=8, color=line.get_color())
    if slo:
        ax.axhline(slo, color="red", linestyle="--", linewidth=1, label="objective %g ms" % slo)
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate (requests/s, Poisson)")
    ax.set_ylabel("p%g latency (ms)" % pct)
    ax.set_title("%s on %s: p%g vs offered load (star: peak under the objective)" % (doc.get("model", "?"),
                                                                                       doc.get("device", "?"), pct))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = stem + "-p99-vs-qps.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_scenario(plt, doc, stem):
    runs = {r["controller"]: r for r in doc["runs"]}
    points = doc.get("points", [])
    slo = doc.get("slo_ms")
    at = doc.get("change_at_s")
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    styles = {"off": dict(color="tab:red", label="controller off"), "slo": dict(color="tab:blue", label="controller on")}
    for name, r in runs.items():
        t = [w["t_s"] for w in r["timeline"]]
        axes[0].plot(t, [_num(w["p99_ms"]) for w in r["timeline"]], drawstyle="steps-pre", **styles.get(name, {}))
        axes[1].plot(t, [100 * _num(w["accuracy"]) for w in r["timeline"]], drawstyle="steps-pre",
                     **styles.get(name, {}))
    if slo:
        axes[0].axhline(slo, color="black", linestyle="--", linewidth=1, label="objective %g ms" % slo)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("p%g latency per window (ms)" % doc.get("percentile", 99))
    axes[1].set_ylabel("accuracy per window (%)")
    on = runs.get("slo")
    if on:
        t = [w["t_s"] for w in on["timeline"]]
        axes[2].plot(t, [w["point"] for w in on["timeline"]], drawstyle="steps-pre", color="tab:blue",
                     label="operating point (controller on)")
        axes[2].set_yticks(range(len(points)))
        axes[2].set_yticklabels(points, fontsize=7)
        axes[2].invert_yaxis()
        axes[2].set_ylabel("point (strict at top)")
        tw = axes[2].twinx()
        tw.plot(t, [w["offered_qps"] for w in on["timeline"]], color="gray", alpha=0.6, label="offered qps")
        if any(w["shifted_share"] > 0 for w in on["timeline"]):
            tw.plot(t, [100 * w["shifted_share"] for w in on["timeline"]], color="tab:orange", alpha=0.6,
                    label="shifted inputs (%)")
        tw.set_ylabel("offered qps / shifted %")
        tw.legend(loc="upper right", fontsize=8)
        for c in on.get("changes", []):
            axes[0].axvline(c["t_s"], color="tab:blue", alpha=0.15, linewidth=1)
    for ax in axes:
        if at is not None:
            ax.axvline(at, color="black", alpha=0.5, linestyle=":")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_xlabel("time (s)")
    what = "load step %.0f -> %.0f qps" % (doc.get("qps", 0), doc.get("step_qps", 0)) if doc.get(
        "scenario") == "load-step" else "shift: %.0f%% %s (severity %s) at %.0f qps" % (
            100 * doc.get("shift_fraction", 0), doc.get("shift", "?"), doc.get("shift_severity", "?"),
            doc.get("qps", 0))
    axes[0].set_title("%s on %s: %s, change at %.1f s" % (doc.get("model", "?"), doc.get("device", "?"), what,
                                                         at if at is not None else math.nan))
    fig.tight_layout()
    path = stem + "-timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_loadtest(plt, doc, stem):
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for r in doc["runs"]:
        t = [w["t_s"] for w in r["timeline"]]
        line, = axes[0].plot(t, [_num(w["p99_ms"]) for w in r["timeline"]], drawstyle="steps-pre",
                             label="%s p%g" % (r.get("policy", "?"), doc.get("percentile", 99)))
        axes[0].plot(t, [_num(w["p50_ms"]) for w in r["timeline"]], drawstyle="steps-pre", linestyle=":",
                     color=line.get_color(), label="%s p50" % r.get("policy", "?"))
        axes[1].plot(t, [w["throughput_qps"] for w in r["timeline"]], drawstyle="steps-pre", color=line.get_color(),
                     label=r.get("policy", "?"))
    if doc.get("slo_ms"):
        axes[0].axhline(doc["slo_ms"], color="red", linestyle="--", linewidth=1, label="objective")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("latency per window (ms)")
    axes[1].set_ylabel("answered per second")
    axes[1].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("%s on %s: %s" % (doc.get("model", "?"), doc.get("device", "?"), doc.get("arrival", "")))
    fig.tight_layout()
    path = stem + "-timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="JSON written by exitrt loadtest --output")
    ap.add_argument("--out", help="directory for the PNGs (default: beside each JSON)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_load.py: matplotlib is not installed (apt-get install python3-matplotlib, or "
              "pip install matplotlib); no plots written", file=sys.stderr)
        return 0
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    kinds = {"peak": plot_peak, "scenario": plot_scenario, "loadtest": plot_loadtest}
    for f in args.files:
        with open(f) as fh:
            doc = json.load(fh)
        kind = doc.get("kind")
        if kind not in kinds:
            print("plot_load.py: %s: not an exitrt loadtest result (kind %r)" % (f, kind), file=sys.stderr)
            return 1
        for path in kinds[kind](plt, doc, _stem(f, args.out)):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
