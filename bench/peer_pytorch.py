#!/usr/bin/env python3
"""The headline benchmark the way research code does it: PyTorch eager.

A residual MLP (depth x Linear D->D, x = x + relu(W x + b)), an exit head D->classes after
every block, bf16 on CUDA (f32 on the CPU). Every sample's exit stage is drawn once with a
per-stage hazard (a seeded torch.Generator), as exitrt's scheduled:hazard=H policy does.
Variants, per width D and batch B, timed from ONE run (interleaved rep by rep):

  full     every block for every row, the last head only
  masked   every row through every block, every head evaluated and decided (torch.where)
  compact  boolean-index compaction after each head: x = x[keep] (each one a host sync)
  ideal    the blocks alone at the survivor counts, static slices, nothing else

Times are CUDA events around each forward (torch.cuda.synchronize before each), median and
p99 of --reps runs after --warmup; on the CPU the wall clock. Units match `exitrt bench`:
ms, speedup = full/compact, of_ideal = ideal/compact, ideal_x = full/ideal. The copy and
GEMM ceilings are measured once and printed beside the table.

  python3 bench/peer_pytorch.py                      # the BENCHMARKS.md grid on cuda
  python3 bench/peer_pytorch.py --device cpu         # a small smoke test
  python3 bench/peer_pytorch.py --json results.json
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def log(*args):
    print(*args, flush=True)


def percentile(values, q):
    """Linear interpolation between order statistics (numpy's default, like exitrt)."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class Timer:
    """Milliseconds of one call: CUDA events on the device timeline, else the wall clock."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn):
        self.sync()
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def ceilings(device, dtype, timer):
    """Device-to-device copy (bytes read + written, larger than L2) and a square GEMM."""
    cuda = device.type == "cuda"
    n_bytes = (1 << 30) if cuda else (256 << 20)
    src = torch.rand(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    t = statistics.median(timer(lambda: dst.copy_(src)) for _ in range(20))
    copy_gbs = 2.0 * n_bytes / (t * 1e-3) / 1e9
    del src, dst
    n = 8192 if cuda else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    t = statistics.median(timer(lambda: torch.mm(a, b)) for _ in range(10 if cuda else 3))
    gemm_tflops = 2.0 * n ** 3 / (t * 1e-3) / 1e12
    return {"copy_gb_s": copy_gbs, "copy_bytes": n_bytes, "gemm_tflops": gemm_tflops, "gemm_n": n,
            "gemm_dtype": str(dtype).replace("torch.", "")}


class Model:
    """depth blocks x = x + relu(W x + b) and a head after each, seeded like exitrt synth:
    W uniform +-0.5/sqrt(D), b +-0.01, heads +-1/sqrt(D)."""

    def __init__(self, D, depth, classes, device, dtype, seed):
        g = torch.Generator().manual_seed(seed)

        def uni(shape, scale):
            return ((torch.rand(*shape, generator=g) * 2 - 1) * scale).to(device=device, dtype=dtype)

        self.blocks, self.heads = [], []
        for _ in range(depth):
            lin = torch.nn.Linear(D, D, device=device, dtype=dtype)
            head = torch.nn.Linear(D, classes, device=device, dtype=dtype)
            lin.weight.copy_(uni((D, D), 0.5 / math.sqrt(D)))
            lin.bias.copy_(uni((D,), 0.01))
            head.weight.copy_(uni((classes, D), 1 / math.sqrt(D)))
            head.bias.copy_(uni((classes,), 1 / math.sqrt(D)))
            self.blocks.append(lin)
            self.heads.append(head)
        self.depth = depth


class Peer:
    def __init__(self, model, device):
        self.m = model
        self.device = device
        self.syncs = 0  # boolean-index operations (each waits for the device) of the last compact

    def full(self, x):
        for blk in self.m.blocks:
            x = x + F.relu(blk(x))
        return self.m.heads[-1](x)

    def masked(self, x, exit_stage):
        B = x.shape[0]
        pred = torch.full((B,), -1, dtype=torch.long, device=self.device)
        conf = torch.zeros(B, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        for k, (blk, head) in enumerate(zip(self.m.blocks, self.m.heads)):
            x = x + F.relu(blk(x))
            c, p = head(x).float().softmax(-1).max(-1)
            leave = (exit_stage == k) & ~done
            pred = torch.where(leave, p, pred)
            conf = torch.where(leave, c, conf)
            done = done | leave
        return pred, conf

    def _bool_index(self, t, mask):
        self.syncs += 1  # nonzero() behind the mask: the host waits for the count
        return t[mask]

    def compact(self, x, exit_stage):
        B = x.shape[0]
        pred = torch.full((B,), -1, dtype=torch.long, device=self.device)
        conf = torch.zeros(B, device=self.device)
        idx = torch.arange(B, device=self.device)
        stage = exit_stage
        self.syncs = 0
        for k, (blk, head) in enumerate(zip(self.m.blocks, self.m.heads)):
            x = x + F.relu(blk(x))
            c, p = head(x).float().softmax(-1).max(-1)
            leave = stage == k
            left = self._bool_index(idx, leave)
            pred[left] = self._bool_index(p, leave)
            conf[left] = self._bool_index(c, leave)
            keep = ~leave
            x = self._bool_index(x, keep)
            if x.shape[0] == 0:
                break
            idx = self._bool_index(idx, keep)
            stage = self._bool_index(stage, keep)
        return pred, conf

    def ideal(self, x, rows):
        for blk, n in zip(self.m.blocks, rows):
            if n == 0:
                break
            h = x[:n]
            x = h + F.relu(blk(h))
        return x


def draw_exits(B, depth, hazard, seed, device):
    """The first stage whose draw (probability hazard) fires; the last stage if none."""
    g = torch.Generator().manual_seed(seed + 1)
    fires = torch.rand(B, depth, generator=g) < hazard
    fires[:, -1] = True
    return fires.float().argmax(1).to(device)


def run_point(model, D, B, args, device, dtype, timer):
    peer = Peer(model, device)
    L, C = args.depth, args.classes
    g = torch.Generator().manual_seed(args.seed + 2)
    x = torch.rand(B, D, generator=g).clamp_(min=2.0 ** -24).to(device=device, dtype=dtype)  # never zeros
    exit_stage = draw_exits(B, L, args.hazard, args.seed, device)
    counts = torch.bincount(exit_stage.cpu(), minlength=L).tolist()
    rows = [B - sum(counts[:k]) for k in range(L)]  # rows entering block k

    variants = {
        "full": lambda: peer.full(x),
        "masked": lambda: peer.masked(x, exit_stage),
        "compact": lambda: peer.compact(x, exit_stage),
        "ideal": lambda: peer.ideal(x, rows),
    }
    pm, _ = peer.masked(x, exit_stage)
    pc, _ = peer.compact(x, exit_stage)
    agreement = (pm == pc).float().mean().item()
    times = {k: [] for k in variants}
    for it in range(args.warmup + args.reps):
        for name, fn in variants.items():
            t = timer(fn)
            if it >= args.warmup:
                times[name].append(t)

    body = 2.0 * D * D + D + D  # linear (+bias) and the residual add, per row
    head = 2.0 * D * C + C
    flops = {
        "full": B * (L * body + head),
        "masked": B * L * (body + head),
        "compact": sum(r * (body + head) for r in rows),
        "ideal": sum(r * body for r in rows),
    }
    pt = {"width": D, "batch": B}
    for name in variants:
        med = statistics.median(times[name])
        pt[name] = {"median_ms": med, "p99_ms": percentile(times[name], 99), "min_ms": min(times[name]),
                    "flops": flops[name], "tflops": flops[name] / (med * 1e-3) / 1e12}
    pt["compact"]["rows"] = rows
    pt["compact"]["host_syncs"] = peer.syncs
    f, c, i = (pt[k]["median_ms"] for k in ("full", "compact", "ideal"))
    pt.update({"speedup": f / c, "of_ideal": i / c, "ideal_speedup": f / i, "host_syncs": peer.syncs,
               "survivor_fraction": sum(rows) / (L * B), "pred_agreement": agreement})
    return pt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--widths", help="default: 1024,4096 on cuda, 256 on cpu")
    ap.add_argument("--batches", help="default: 64,1024,8192 on cuda, 64,256 on cpu")
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], help="default: bf16 on cuda, f32 on cpu")
    ap.add_argument("--hazard", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-ceilings", action="store_true", help="skip the copy and GEMM ceilings")
    ap.add_argument("--json", help="also write every figure and the metadata to this file")
    args = ap.parse_args()

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    widths = [int(v) for v in (args.widths or ("256" if cpu else "1024,4096")).split(",")]
    batches = [int(v) for v in (args.batches or ("64,256" if cpu else "64,1024,8192")).split(",")]
    dtypes = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
    dtype = dtypes[args.dtype or ("f32" if cpu else "bf16")]
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = False
    timer = Timer(device)
    name = torch.cuda.get_device_name(device) if not cpu else (platform.processor() or platform.machine())

    meta = {"tool": "bench/peer_pytorch.py", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "command": " ".join(sys.argv), "device": f"{device} ({name})", "torch": torch.__version__,
            "dtype": str(dtype).replace("torch.", ""), "depth": args.depth, "classes": args.classes,
            "hazard": args.hazard, "seed": args.seed, "reps": args.reps, "warmup": args.warmup,
            "timing": "median_ms/p99_ms: one forward, input already on the device; CUDA events with "
                      "torch.cuda.synchronize before each (wall clock on the cpu)"}
    out = {"meta": meta, "points": []}

    with torch.no_grad():
        if not args.no_ceilings:
            ceil = ceilings(device, dtype, timer)
            out["ceilings"] = ceil
            log(f"ceilings on {meta['device']}: copy {ceil['copy_gb_s']:.0f} GB/s (read + write, "
                f"{ceil['copy_bytes'] >> 20} MiB), GEMM {ceil['gemm_tflops']:.2f} TFLOP/s "
                f"({ceil['gemm_dtype']} {ceil['gemm_n']}^3)")
        log(f"peer_pytorch | {meta['device']} | torch {torch.__version__} | {meta['dtype']} | {args.depth} blocks, "
            f"exit after each, {args.classes} classes | hazard {args.hazard} seed {args.seed} | median of "
            f"{args.reps} runs after {args.warmup} warm-up")
        log(f"{'D':>6} {'B':>6} {'full ms':>9} {'masked':>9} {'compact':>9} {'ideal':>9} {'speedup':>8} "
            f"{'of_ideal':>8} {'ideal_x':>8} {'syncs':>5} {'TF/s full':>9} {'TF/s cmp':>9} {'surv':>6}")
        for D in widths:
            model = Model(D, args.depth, args.classes, device, dtype, args.seed)
            for B in batches:
                pt = run_point(model, D, B, args, device, dtype, timer)
                out["points"].append(pt)
                log(f"{D:6d} {B:6d} {pt['full']['median_ms']:9.4f} {pt['masked']['median_ms']:9.4f} "
                    f"{pt['compact']['median_ms']:9.4f} {pt['ideal']['median_ms']:9.4f} {pt['speedup']:7.2f}x "
                    f"{pt['of_ideal']:8.2f} {pt['ideal_speedup']:7.2f}x {pt['host_syncs']:5d} "
                    f"{pt['full']['tflops']:9.4g} {pt['compact']['tflops']:9.4g} {pt['survivor_fraction']:6.3f}")
                if args.json:
                    with open(args.json + ".tmp", "w") as f:
                        json.dump(out, f, indent=2)
                    os.replace(args.json + ".tmp", args.json)
        log("\nms: one forward (input on the device). speedup = full/compact; of_ideal = ideal/compact; "
            "ideal_x = full/ideal;\nsyncs = boolean-index operations per compact forward (each a host "
            "synchronisation); surv = block work left.")


if __name__ == "__main__":
    main()
