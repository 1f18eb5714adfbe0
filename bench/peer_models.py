#!/usr/bin/env python3
"""The shipped models the way research code runs them, beside exitrt: PyTorch eager.

A model directory's config.json is interpreted op by op with torch.nn.functional (no exitrt
code), its model.safetensors read byte for byte, its calibration.json applied as exitrt
applies it (logits / T before the softmax). Exits leave the way BranchyNet-style code does:
after each exit head the batch is cut to the samples that stay, x = x[keep] (boolean
indexing). The policies are exitrt's (kernels/exit_math.h): confidence (top-1 probability
>= T), entropy (entropy / log C <= T), margin (p1 - p2 >= T), fixed:K, none.

Side by side, in ONE run: for every (model, policy) pair, --rounds rounds, each one
`exitrt eval --json` on the same split, batch and policy, then one PyTorch pass over the
split, alternating, so both see the same machine state. Both run on --device (cpu, or
cuda:N in f32 with TF32 off on both sides). Per batch of the split the PyTorch time is the
wall clock from the input on the host to the predictions on the host (upload,
normalisation, every stage and head, the exit decisions and the compaction, download).
exitrt's batch latency covers the same from its upload (out of its staging buffer) to its
download, but not its host-side copies of the batch into that buffer and of the results
out of it (a 256 x 784 batch: 0.8 MB, tens of microseconds on this VM).

The ceiling beside them: the pair's executed FLOPs (exitrt's executed share times the
model's linear and conv multiply-adds x 2; exitrt's own count, with biases, norms and
pools, is under 1% higher) at the device's f32 peak given by --peak-gflops (this VM's two
cores: 233 GFLOP/s of independent FMAs, bench/results/2026-11-29-cpu-onednn-conv/peak.c);
without it, at the f32 GEMM rate PyTorch reaches here (a large torch.mm), which is a
reference, not a bound.

  /usr/bin/python3 bench/peer_models.py                       # both shipped models
  /usr/bin/python3 bench/peer_models.py --pair models/fmnist-mlp=confidence:0.9 --rounds 2
  /usr/bin/python3 bench/peer_models.py --json out.json --peak-gflops 233
  python3 bench/peer_models.py --device cuda:0 --exitrt build-cuda/exitrt

Prints one table: per pair, accuracy and exit histogram of both (a few borderline decisions
may differ: float sums in another order), batch mean and p50/p99 ms of both (the median over
rounds of each round's figure), torch/exitrt (above 1: exitrt is faster) and the ceiling.
The figures are the machine's at the time: on a shared VM, read the ratios of one run.
"""
import argparse
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The operating points of the main job's frontier (README): `none`, the cheapest exit and
# the point `exitrt select` chose on the validation split.
DEFAULT_PAIRS = [
    "models/fmnist-mlp=none", "models/fmnist-mlp=fixed:0",
    "models/fmnist-mlp=confidence:0.86691,0,0.673867,0.673867",
    "models/fmnist-cnn=none", "models/fmnist-cnn=fixed:0", "models/fmnist-cnn=confidence:0.824604",
]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the model, from its files

def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        buf = bytearray(raw[8 + n + b:8 + n + e])
        out[name] = torch.frombuffer(buf, dtype=dtypes[t["dtype"]]).reshape(t["shape"]).float()
    return out


def pair2(v, default):
    v = default if v is None else v
    return tuple(v) if isinstance(v, list) else (v, v)


def activation(x, name):
    if name in (None, "none"):
        return x
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x)  # the exact erf form, as FORMAT.md
    raise ValueError(f"activation {name!r}")


def run_ops(ops, x, W):
    """x: [N, ...] with each sample shaped as the format says."""
    for op in ops:
        kind = op["op"]
        if kind == "flatten":
            x = x.flatten(1)
        elif kind == "linear":
            x = activation(F.linear(x, W[op["weight"]], W.get(op.get("bias"))), op.get("activation"))
        elif kind == "layernorm":
            x = F.layer_norm(x, (op["dim"],), W.get(op.get("weight")), W.get(op.get("bias")), op.get("eps", 1e-5))
        elif kind == "residual":
            x = x + run_ops(op["ops"], x, W)
        elif kind == "conv2d":
            y = F.conv2d(x, W[op["weight"]], W.get(op.get("bias")), stride=pair2(op.get("stride"), 1),
                         padding=pair2(op.get("padding"), 0), dilation=pair2(op.get("dilation"), 1),
                         groups=op.get("groups", 1))
            x = activation(y, op.get("activation"))
        elif kind == "relu":
            x = F.relu(x)
        elif kind in ("maxpool", "avgpool"):
            k = pair2(op["kernel"], None)
            pool = F.max_pool2d if kind == "maxpool" else F.avg_pool2d
            x = pool(x, k, stride=pair2(op.get("stride"), k), padding=pair2(op.get("padding"), 0))
        elif kind == "global_avgpool":
            x = x.mean(dim=(2, 3), keepdim=True)
        else:
            raise ValueError(f"op {kind!r} is not in FORMAT.md")
    return x


class Model:
    def __init__(self, path, calibrated, dev):
        self.cfg = json.load(open(os.path.join(path, "config.json")))
        self.W = {k: v.to(dev) for k, v in load_safetensors(os.path.join(path, "model.safetensors")).items()}
        inp = self.cfg["input"]
        self.shape = inp["shape"]
        # One value for all channels or one per channel (the first dimension), as FORMAT.md.
        per_channel = [1, -1, 1, 1] if len(self.shape) == 3 else [1, -1]
        self.mean = torch.tensor(inp.get("mean", [0.0]), device=dev).reshape(per_channel)
        self.std = torch.tensor(inp.get("std", [1.0]), device=dev).reshape(per_channel)
        self.stages = self.cfg["stages"]
        self.exits = [k for k, s in enumerate(self.stages) if s.get("exit")]
        cal = os.path.join(path, "calibration.json")
        temps = json.load(open(cal))["temperatures"] if calibrated and os.path.exists(cal) else [1.0] * len(self.exits)
        self.inv_temp = [1.0 / t for t in temps]


# ---------------------------------------------------------------- policies and the forward

def parse_policy(spec, num_exits):
    kind, _, arg = spec.partition(":")
    if kind == "none":
        return kind, None
    if kind == "fixed":
        return kind, int(arg)
    if kind in ("confidence", "entropy", "margin"):
        t = [float(v) for v in arg.split(",")]
        if len(t) == 1:
            t = t * (num_exits - 1)
        if len(t) != num_exits - 1:
            raise ValueError(f"{spec}: one threshold, or one per exit but the last ({num_exits - 1})")
        return kind, t
    raise ValueError(f"policy {spec!r}: none | fixed:K | confidence|entropy|margin:T[,T..]")


def leaves(kind, arg, e, z, inv_temp):
    """Which rows leave at exit e, from logits z (exit_math.h's rules; the last exit is not asked).
    As in exitrt, every head is evaluated and decided, `none`'s and `fixed`'s too."""
    if kind == "none":
        return torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    if kind == "fixed":
        return torch.full((z.shape[0],), e >= arg, dtype=torch.bool, device=z.device)
    p = torch.softmax(z * inv_temp, dim=1)
    if kind == "confidence":
        return p.max(dim=1).values >= arg[e]
    if kind == "margin":
        top = p.topk(2, dim=1).values
        return (top[:, 0] - top[:, 1]) >= arg[e]
    ent = -(p * torch.log(p.clamp_min(1e-38))).sum(dim=1) / np.log(z.shape[1])
    return ent <= arg[e]


@torch.no_grad()
def forward(model, x, kind, arg):
    """One batch: predictions and exit indices, every sample leaving at its exit."""
    n, dev = x.shape[0], x.device
    pred = torch.empty(n, dtype=torch.long, device=dev)
    exit_of = torch.empty(n, dtype=torch.long, device=dev)
    idx = torch.arange(n, device=dev)
    x = (x - model.mean) / model.std
    last = len(model.exits) - 1
    for k, stage in enumerate(model.stages):
        x = run_ops(stage["ops"], x, model.W)
        if not stage.get("exit"):
            continue
        e = model.exits.index(k)
        z = run_ops(stage["exit"], x, model.W).flatten(1)
        go = torch.ones(z.shape[0], dtype=torch.bool, device=dev) if e == last else leaves(kind, arg, e, z, model.inv_temp[e])
        pred[idx[go]] = z[go].argmax(dim=1)
        exit_of[idx[go]] = e
        keep = ~go
        if not bool(keep.any()):  # a host sync, as in the research code this stands for
            break
        x, idx = x[keep], idx[keep]
    return pred.cpu(), exit_of.cpu()  # the download (a sync on a GPU)


# ---------------------------------------------------------------- data, timing, exitrt

def fashion_mnist_test():
    d = os.environ.get("ERT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    img = np.frombuffer(gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz")).read()[16:], np.uint8)
    lab = np.frombuffer(gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz")).read()[8:], np.uint8)
    x = torch.from_numpy(img.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0))
    return x, torch.from_numpy(lab.astype(np.int64))


def percentile(values, q):
    """Linear interpolation between order statistics, as exitrt's reports."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def torch_pass(model, x, y, kind, arg, batch, dev):
    """One pass over the split; per batch the wall clock from the input on the host (its
    upload, on a GPU) to the predictions on the host."""
    ms, preds, exits = [], [], []
    for b in range(0, x.shape[0], batch):
        xb = x[b:b + batch].contiguous()
        if len(model.shape) == 1:
            xb = xb.flatten(1)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        p, e = forward(model, xb.to(dev), kind, arg)
        ms.append((time.perf_counter() - t) * 1e3)
        preds.append(p)
        exits.append(e)
    pred, ex = torch.cat(preds), torch.cat(exits)
    return {"accuracy": float((pred == y).float().mean()), "exit_histogram": np.bincount(ex.numpy(), minlength=len(model.exits)).tolist(),
            "mean": statistics.fmean(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99), "batch_ms": ms}


def exitrt_pass(exe, path, spec, batch, calibrated, device, limit):
    cmd = [exe, "eval", "--model", path, "--data", "fashion-mnist:test", "--policy", spec, "--batch", str(batch),
           "--device", device, "--limit", str(limit), "--json"]
    if not calibrated:
        cmd.append("--no-calibration")
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"peer_models: {' '.join(cmd)} failed (exit {run.returncode}):\n{run.stderr.strip()}")
    r = json.loads(run.stdout)
    lat = r["latency_ms"]
    return {"accuracy": r["accuracy"], "exit_histogram": r["exit_histogram"], "mean": lat["mean"], "p50": lat["p50"],
            "p99": lat["p99"], "flops_fraction": r["flops_fraction"], "device": r["device"]}


def gemm_gflops(dev):
    """The device's f32 GEMM rate as torch sees it: the best of 10 large square products
    (TF32 off on a GPU, as exitrt's default f32)."""
    n = 2048 if dev.type == "cpu" else 8192
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)

    def timed():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        torch.mm(a, b)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t

    timed()
    return 2 * n ** 3 / min(timed() for _ in range(10)) / 1e9


def model_flops(model):
    """FLOPs of the full model per sample (multiply-adds x 2 of linear and conv2d)."""
    x = torch.zeros([1] + model.shape, device=model.mean.device)
    total = 0

    def count(ops, x):
        nonlocal total
        for op in ops:
            if op["op"] == "linear":
                total += 2 * op["in"] * op["out"]
            elif op["op"] == "conv2d":
                w = model.W[op["weight"]]
                y = run_ops([op], x, model.W)
                total += 2 * y.numel() * w[0].numel()
            elif op["op"] == "residual":
                count(op["ops"], x)
            x = run_ops([op], x, model.W)
        return x

    with torch.no_grad():
        x = (x - model.mean) / model.std
        for s in model.stages:
            x = count(s["ops"], x)
        count(model.stages[-1]["exit"], x)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pair", action="append", help="MODEL_DIR=POLICY (repeatable; default: both shipped models' frontier points)")
    ap.add_argument("--exitrt", default=os.path.join(ROOT, "build", "exitrt"), help="the exitrt binary (default build/exitrt)")
    ap.add_argument("--device", default="cpu", help="cpu (default) | cuda:N, for both")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--limit", type=int, default=10000, help="only the first N test samples (default all 10,000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of exitrt and PyTorch (default 3)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="PyTorch's threads (default: every CPU this process may run on, as exitrt)")
    ap.add_argument("--peak-gflops", type=float, help="the device's f32 peak, for the ceiling (default: the GEMM rate measured here)")
    ap.add_argument("--no-calibration", action="store_true", help="temperatures 1 on both sides")
    ap.add_argument("--json", help="write every round's figures here")
    args = ap.parse_args()
    if not os.access(args.exitrt, os.X_OK):
        sys.exit(f"peer_models: no exitrt binary at {args.exitrt} (build it, or give --exitrt)")
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"peer_models: --device {args.device}, but this PyTorch sees no CUDA device")
    torch.backends.cudnn.allow_tf32 = False  # f32 convolutions, as exitrt's default dtype
    calibrated = not args.no_calibration
    x, y = fashion_mnist_test()
    x, y = x[:args.limit], y[:args.limit]
    rate = gemm_gflops(dev)
    log(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads; f32 GEMM ceiling {rate:.1f} GFLOP/s")
    rows, record = [], {"torch": torch.__version__, "device": args.device, "threads": args.threads, "gemm_gflops": rate,
                           "peak_gflops": args.peak_gflops, "pairs": []}
    for pair in args.pair or DEFAULT_PAIRS:
        path, _, spec = pair.partition("=")
        path = path if os.path.isabs(path) else os.path.join(ROOT, path)
        model = Model(path, calibrated, dev)
        kind, arg = parse_policy(spec, len(model.exits))
        torch_pass(model, x[:4 * args.batch], y[:4 * args.batch], kind, arg, args.batch, dev)  # warm-up
        ours, theirs = [], []
        for r in range(args.rounds):
            ours.append(exitrt_pass(args.exitrt, path, spec, args.batch, calibrated, args.device, args.limit))
            theirs.append(torch_pass(model, x, y, kind, arg, args.batch, dev))
            log(f"{os.path.basename(path)} {spec} round {r + 1}: exitrt {ours[-1]['mean']:.2f} ms, torch {theirs[-1]['mean']:.2f} ms")
        med = lambda runs, k: statistics.median(run[k] for run in runs)
        per_batch = x.shape[0] / -(-x.shape[0] // args.batch)  # the mean batch: the last one may be short
        ceiling = ours[0]["flops_fraction"] * model_flops(model) * per_batch / ((args.peak_gflops or rate) * 1e9) * 1e3
        rows.append((os.path.basename(path), spec, ours[0], theirs[0], {k: med(ours, k) for k in ("mean", "p50", "p99")},
                     {k: med(theirs, k) for k in ("mean", "p50", "p99")}, ceiling))
        record["pairs"].append({"model": os.path.basename(path), "policy": spec, "exitrt": ours,
                                "torch": [{k: v for k, v in t.items() if k != "batch_ms"} for t in theirs], "ceiling_ms": ceiling})
    record["exitrt_device"] = rows[0][2]["device"] if rows else None
    print(f"exitrt ({record['exitrt_device']}) vs PyTorch {torch.__version__} eager on {args.device} ({args.threads} threads), "
          f"fashion-mnist:test ({x.shape[0]} samples), batch {args.batch}, median of {args.rounds} alternating rounds; ms per batch")
    print(f"{'model':<11} {'policy':<40} {'acc ert':>8} {'acc pt':>8} {'ert mean':>9} {'pt mean':>9} {'pt/ert':>7} "
          f"{'ert p99':>8} {'pt p99':>8} {'ceiling':>8}  exits ert | pt")
    for name, spec, o, t, om, tm, ceil in rows:
        print(f"{name:<11} {spec:<40} {100 * o['accuracy']:7.2f}% {100 * t['accuracy']:7.2f}% {om['mean']:9.2f} {tm['mean']:9.2f} "
              f"{tm['mean'] / om['mean']:7.2f} {om['p99']:8.2f} {tm['p99']:8.2f} {ceil:8.2f}  "
              f"{o['exit_histogram']} | {t['exit_histogram']}")
    if args.peak_gflops:
        print(f"ceiling: the pair's executed FLOPs (exitrt's count) at the f32 peak given, {args.peak_gflops:.1f} GFLOP/s "
              f"(PyTorch's large f32 GEMM here: {rate:.1f})")
    else:
        print(f"ceiling: the pair's executed FLOPs (exitrt's count) at the f32 GEMM rate PyTorch reaches on {args.device} "
              f"({rate:.1f} GFLOP/s; a reference, not a bound: give --peak-gflops)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
