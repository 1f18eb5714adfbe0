#!/usr/bin/env python3
"""Pictures of exitrt's evaluation outputs (matplotlib; PNG and SVG).

  plot.py sweep DIR [--policy-file FILE] [--budget MS --metric M] [--formats png,svg]
      DIR/sweep.json (exitrt sweep) ->
        DIR/frontier.*     accuracy vs mean and vs p99 batch latency, every policy, the
                           Pareto frontier highlighted, the budget line and the chosen
                           point of `exitrt select` (DIR/policy.json, or --policy-file)
        DIR/exits.*        the exit histogram of every operating point
        DIR/reliability.*  reliability diagrams, when DIR/reliability.json exists
                           (with DIR/reliability-uncalibrated.json overlaid if present)
  plot.py shift DIR [--formats png,svg]
      DIR/shift.json (exitrt shift-report) -> DIR/shift.*: accuracy, mean exit, mean batch
      latency and p99 per-sample latency against severity, per corruption and policy
  plot.py reliability FILE.json [FILE.json ...] --out PREFIX [--formats png,svg]
      reliability diagrams from bins JSON:
        {"exits": [{"bins": [{"confidence": c, "accuracy": a, "count": n,
                              "lo": l, "hi": h}, ...], "ece": e}, ...]}
      ("lo"/"hi" optional: equal-width bins on [0, 1] are assumed), or a model's
      calibration.json, whose exits hold "before" and "after" bins.

Needs only the standard library and matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        "plot.py: matplotlib is not installed (Debian: apt-get install python3-matplotlib; "
        "elsewhere: python3 -m pip install matplotlib)\n"
    )
    sys.exit(2)

FAMILY_COLORS = {
    "none": "#000000",
    "confidence": "#1f77b4",
    "entropy": "#ff7f0e",
    "margin": "#2ca02c",
    "patience": "#9467bd",
    "fixed": "#8c564b",
    "oracle": "#7f7f7f",
    "per-exit": "#d62728",
    "shared": "#e377c2",
}
FAMILY_MARKERS = {
    "none": "s",
    "confidence": "o",
    "entropy": "^",
    "margin": "v",
    "patience": "D",
    "fixed": "P",
    "oracle": "*",
    "per-exit": "X",
    "shared": "h",
}


def load(path):
    with open(path) as f:
        return json.load(f)


def save(fig, prefix, formats):
    written = []
    for fmt in formats:
        path = "%s.%s" % (prefix, fmt)
        tmp = "%s.tmp.%d.%s" % (prefix, os.getpid(), fmt)
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format=fmt)
        os.replace(tmp, path)
        written.append(path)
    plt.close(fig)
    print("wrote " + ", ".join(written))


def num(v):
    return float("nan") if v is None else float(v)


def frontier_line(points):
    """Points (latency, accuracy) on a frontier, joined as a staircase, fastest first."""
    pts = sorted(points)
    xs, ys = [], []
    for x, y in pts:
        if xs:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    return xs, ys


# ---------------------------------------------------------------- sweep


def plot_frontier(sweep, out, formats, chosen):
    rows = sweep["rows"]
    panels = [("batch_latency_ms", "mean", "frontier_mean", "mean batch latency (ms)", "batch-mean"),
              ("batch_latency_ms", "p99", "frontier_p99", "p99 batch latency (ms)", "batch-p99")]
    fig, axes = plt.subplots(1, 2, figsize=(14.5, 5.2))
    for ax, (key, stat, flag, label, metric) in zip(axes, panels):
        seen = set()
        front = []
        for r in rows:
            if r.get("accuracy") is None:
                continue
            x, y = num(r[key][stat]), 100.0 * num(r["accuracy"])
            fam = r.get("family", "")
            color = FAMILY_COLORS.get(fam, "#17becf")
            marker = FAMILY_MARKERS.get(fam, "o")
            hollow = r.get("calibrated") == 0
            name = fam + (" (T=1)" if hollow else "")
            ax.scatter([x], [y], s=110 if fam == "oracle" else 38, marker=marker,
                       facecolors="none" if hollow else color, edgecolors=color, linewidths=1.3,
                       label=None if name in seen else name, zorder=3)
            seen.add(name)
            if r.get(flag):
                front.append((x, y))
        if front:
            xs, ys = frontier_line(front)
            ax.plot(xs, ys, color="black", lw=1.2, alpha=0.7, zorder=2, label="Pareto frontier")
            ax.scatter([p[0] for p in front], [p[1] for p in front], s=130, facecolors="none",
                       edgecolors="black", linewidths=1.0, zorder=4)
        if chosen and chosen.get("metric") == metric and chosen.get("budget_ms") is not None:
            ax.axvline(chosen["budget_ms"], color="#d62728", ls="--", lw=1.2,
                       label="budget %.3g ms" % chosen["budget_ms"])
        if chosen and chosen.get("policy"):
            for r in rows:
                if r["policy"] == chosen["policy"] and r.get("accuracy") is not None:
                    ax.scatter([num(r[key][stat])], [100.0 * num(r["accuracy"])], s=260, marker="o",
                               facecolors="none", edgecolors="#d62728", linewidths=2.0, zorder=5,
                               label="selected: " + chosen["policy"])
                    break
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.set_title("accuracy vs %s" % label.replace(" (ms)", ""))
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    shift = sweep.get("shift")
    sub = "" if not shift else ", %s severity %s" % (shift["kind"], shift["severity"])
    fig.suptitle("%s on %s%s (%s, batch %s, %s samples; oracle = reference, never on the frontier)"
                 % (sweep["model"], sweep["data"], sub, sweep["device"], sweep["batch"], sweep["samples"]), fontsize=10)
    save(fig, os.path.join(out, "frontier"), formats)


def plot_exits(sweep, out, formats):
    rows = sweep["rows"]
    n_exits = sweep["num_exits"]
    fig, ax = plt.subplots(figsize=(9, 0.26 * len(rows) + 1.5))
    cmap = plt.get_cmap("viridis")
    labels = []
    for i, r in enumerate(rows):
        total = float(sum(r["exit_histogram"])) or 1.0
        left = 0.0
        for e, count in enumerate(r["exit_histogram"]):
            share = count / total
            ax.barh(i, share, left=left, color=cmap(e / max(1, n_exits - 1)),
                    label=("exit %d" % e) if i == 0 else None, height=0.8)
            left += share
        mark = " *" if r.get("frontier_mean") else ""
        labels.append(r["policy"][:38] + mark)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of samples leaving at each exit  (* = on the mean-latency frontier)")
    ax.legend(ncol=min(n_exits, 8), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 1.0 + 1.2 / (len(rows) + 4)))
    ax.set_title("exit histograms: %s on %s" % (sweep["model"], sweep["data"]), fontsize=10, pad=28)
    save(fig, os.path.join(out, "exits"), formats)


# ---------------------------------------------------------------- reliability


def bins_of(entry):
    """[(lo, hi, confidence, accuracy, count)] of one exit's bins, empty bins dropped."""
    bins = entry["bins"]
    k = len(bins)
    out = []
    for i, b in enumerate(bins):
        count = b.get("count", 0) or 0
        if count <= 0 or b.get("confidence") is None or b.get("accuracy") is None:
            continue
        lo = b.get("lo", i / float(k))
        hi = b.get("hi", (i + 1) / float(k))
        out.append((lo, hi, float(b["confidence"]), float(b["accuracy"]), count))
    return out


def series_of(doc, name):
    """[(label, [exit entries])] of a bins JSON or a calibration.json."""
    exits = doc.get("exits", [])
    if exits and "bins" in exits[0]:
        cal = doc.get("calibrated")
        label = name if cal is None else ("calibrated" if cal else "temperature 1")
        return [(label, exits)]
    out = []
    for key, label in (("before", "before calibration"), ("after", "after calibration")):
        if exits and key in exits[0]:
            out.append((label, [e[key] for e in exits]))
    return out


def plot_reliability(docs, prefix, formats, title):
    series = []
    for name, doc in docs:
        series.extend(series_of(doc, name))
    if not series:
        sys.stderr.write("plot.py: no reliability bins found\n")
        return
    n = max(len(s[1]) for s in series)
    cols = min(n, 5)
    rows = int(math.ceil(n / float(cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.2 * rows), squeeze=False)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for e in range(rows * cols):
        ax = axes[e // cols][e % cols]
        if e >= n:
            ax.axis("off")
            continue
        ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1)
        for si, (label, exits) in enumerate(series):
            if e >= len(exits):
                continue
            bins = bins_of(exits[e])
            width = [(hi - lo) * (0.9 / len(series)) for lo, hi, _, _, _ in bins]
            left = [lo + (hi - lo) * 0.05 + w * si for (lo, hi, _, _, _), w in zip(bins, width)]
            ax.bar(left, [b[3] for b in bins], width=width, align="edge", color=colors[si % 4], alpha=0.75,
                   label="%s (ECE %.3f)" % (label, num(exits[e].get("ece"))))
            ax.plot([b[2] for b in bins], [b[3] for b in bins], color=colors[si % 4], marker=".", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title("exit %d" % e, fontsize=9)
        ax.set_xlabel("confidence", fontsize=8)
        if e % cols == 0:
            ax.set_ylabel("accuracy", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, prefix, formats)


# ---------------------------------------------------------------- shift


def plot_shift(report, out, formats):
    rows = report["rows"]
    policies = report["policies"]
    shifts = []
    for r in rows:
        if r["shift"] != "none" and r["shift"] not in shifts:
            shifts.append(r["shift"])
    metrics = [("accuracy (%)", lambda r: 100.0 * r["accuracy"]),
               ("mean exit", lambda r: r["mean_exit"]),
               ("mean batch latency (ms)", lambda r: r["batch_latency_ms"]["mean"]),
               ("p99 per-sample latency (ms)", lambda r: r["sample_latency_ms"]["p99"])]
    fig, axes = plt.subplots(len(shifts), len(metrics), figsize=(3.4 * len(metrics), 2.5 * len(shifts) + 0.6),
                             squeeze=False)
    for si, shift in enumerate(shifts):
        for mi, (label, get) in enumerate(metrics):
            ax = axes[si][mi]
            for pi, pol in enumerate(policies):
                clean = [r for r in rows if r["policy"] == pol and r["shift"] == "none"]
                pts = [r for r in rows if r["policy"] == pol and r["shift"] == shift]
                pts.sort(key=lambda r: r["severity"])
                xs = [0] + [r["severity"] for r in pts]
                ys = [get(clean[0])] + [get(r) for r in pts] if clean else [get(r) for r in pts]
                if not clean:
                    xs = xs[1:]
                ax.plot(xs, ys, marker="o", ms=3, lw=1.2, label=pol, color=plt.get_cmap("tab10")(pi % 10))
            ax.grid(alpha=0.3)
            if si == 0:
                ax.set_title(label, fontsize=9)
            if mi == 0:
                ax.set_ylabel(shift, fontsize=9)
            if si == len(shifts) - 1:
                ax.set_xlabel("severity (0 = clean)", fontsize=8)
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("%s on %s under corruptions (%s, batch %s)" % (report["model"], report["data"], report["device"],
                                                               report["batch"]), fontsize=10)
    fig.tight_layout()
    save(fig, os.path.join(out, "shift"), formats)


# ---------------------------------------------------------------- main


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sweep", "shift", "reliability"])
    ap.add_argument("paths", nargs="+", help="DIR (sweep, shift) or bins JSON files (reliability)")
    ap.add_argument("--policy-file", help="a policy file written by `exitrt select` (default DIR/policy.json)")
    ap.add_argument("--budget", type=float, help="draw a latency budget line (ms)")
    ap.add_argument("--metric", default="batch-mean", help="the budget's latency: batch-mean or batch-p99")
    ap.add_argument("--out", help="reliability: output prefix (PREFIX.png, PREFIX.svg)")
    ap.add_argument("--formats", default="png,svg", help="comma-separated: png, svg, pdf")
    a = ap.parse_args(argv)
    formats = [f for f in a.formats.split(",") if f]
    if a.what == "reliability":
        if not a.out:
            ap.error("reliability needs --out PREFIX")
        docs = [(os.path.basename(p), load(p)) for p in a.paths]
        plot_reliability(docs, a.out, formats, "reliability: " + ", ".join(os.path.basename(p) for p in a.paths))
        return 0
    out = a.paths[0]
    if a.what == "shift":
        plot_shift(load(os.path.join(out, "shift.json")), out, formats)
        return 0
    sweep = load(os.path.join(out, "sweep.json"))
    chosen = None
    pf = a.policy_file or os.path.join(out, "policy.json")
    # DIR/policy.json of an earlier sweep into the same directory is stale: use it only
    # when `select` wrote it after this sweep.json.
    fresh = os.path.exists(pf) and os.path.getmtime(pf) >= os.path.getmtime(os.path.join(out, "sweep.json"))
    if os.path.exists(pf) and (a.policy_file or fresh):
        chosen = load(pf)
    if a.budget is not None:
        chosen = dict(chosen or {}, budget_ms=a.budget, metric=a.metric)
    plot_frontier(sweep, out, formats, chosen)
    plot_exits(sweep, out, formats)
    docs = [(n, load(os.path.join(out, n))) for n in ("reliability-uncalibrated.json", "reliability.json")
            if os.path.exists(os.path.join(out, n))]
    if docs:
        plot_reliability(docs, os.path.join(out, "reliability"), formats,
                         "reliability of each exit: %s on %s" % (sweep["model"], sweep["data"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
