#!/usr/bin/python3
"""Train the early-exit MLP ``models/fmnist-mlp`` on Fashion-MNIST and export it.

Usage (from anywhere; paths are relative to the repository):

    /usr/bin/python3 models/train_fmnist_mlp.py [--epochs 18] [--seed 0]

Architecture (5 stages, 5 exits, width 512):
    stage0     = flatten, linear 784->512 relu           exit0 = linear 512->10
    stage1..4  = residual(layernorm 512, linear 512->512 gelu)
                                                          exitk = layernorm 512, linear 512->10
Data: Fashion-MNIST from /usr/share/datasets/fashion-mnist; training images 0..49999 are
the split ``fashion-mnist:train``, 50000..59999 ``fashion-mnist:val`` (reporting only),
t10k the test set.  Pixels are u8/255; normalisation mean/std are the train split's.

Loss: sum_k w_k * CE(exit_k), w_k = (k+1) / 15 (k = 0..4).  AdamW, cosine LR schedule,
dropout inside the training graph only (identity at inference, so the exported graph is
exactly the FORMAT.md one).  Writes model.safetensors, config.json and README.md in
models/fmnist-mlp/ and test/fixtures/fmnist-mlp-reference.json.
"""

import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import export  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N_TRAIN = 50000


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s: not a u8 IDX file" % path)
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError("%s: size mismatch" % path)
    return data.reshape(dims)


def load_fmnist():
    tr_x = read_idx(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz"))
    tr_y = read_idx(os.path.join(DATA_DIR, "train-labels-idx1-ubyte.gz"))
    te_x = read_idx(os.path.join(DATA_DIR, "t10k-images-idx3-ubyte.gz"))
    te_y = read_idx(os.path.join(DATA_DIR, "t10k-labels-idx1-ubyte.gz"))

    def f(x):
        return torch.from_numpy(x.astype(np.float32) / np.float32(255.0))

    def l(y):
        return torch.from_numpy(y.astype(np.int64))

    return {
        "train": (f(tr_x[:N_TRAIN]), l(tr_y[:N_TRAIN])),
        "val": (f(tr_x[N_TRAIN:]), l(tr_y[N_TRAIN:])),
        "test": (f(te_x), l(te_y)),
    }


class Stage(nn.Module):
    pass


class EarlyExitMLP(nn.Module):
    """Module layout mirrors the tensor names: stages.K.{ln,fc}, exits.K.{ln,fc}."""

    def __init__(self, mean, std, width=512, depth=4, n_in=784, n_cls=10, dropout=0.1):
        super().__init__()
        self.mean, self.std = float(mean), float(std)
        self.width, self.depth = width, depth
        self.stages = nn.ModuleList()
        self.exits = nn.ModuleList()
        s0 = Stage()
        s0.fc = nn.Linear(n_in, width)
        self.stages.append(s0)
        e0 = Stage()
        e0.fc = nn.Linear(width, n_cls)
        self.exits.append(e0)
        for _ in range(depth):
            s = Stage()
            s.ln = nn.LayerNorm(width, eps=1e-5)
            s.fc = nn.Linear(width, width)
            self.stages.append(s)
            e = Stage()
            e.ln = nn.LayerNorm(width, eps=1e-5)
            e.fc = nn.Linear(width, n_cls)
            self.exits.append(e)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = ((x - self.mean) / self.std).reshape(x.shape[0], -1)
        h = self.drop(F.relu(self.stages[0].fc(h)))
        outs = [self.exits[0].fc(h)]
        for k in range(1, self.depth + 1):
            s, e = self.stages[k], self.exits[k]
            h = h + self.drop(F.gelu(s.fc(s.ln(h))))
            outs.append(e.fc(e.ln(h)))
        return outs

    def to_builder(self):
        b = export.ModelBuilder("fmnist-mlp", [1, 28, 28], CLASSES, mean=[self.mean], std=[self.std])
        s0, e0 = self.stages[0], self.exits[0]
        b.add_stage("stage0",
                    [b.flatten(), b.linear("stages.0.fc", s0.fc.weight, s0.fc.bias, "relu")],
                    exit=[b.linear("exits.0.fc", e0.fc.weight, e0.fc.bias)])
        for k in range(1, self.depth + 1):
            s, e = self.stages[k], self.exits[k]
            b.add_stage("stage%d" % k,
                        [b.residual([b.layernorm("stages.%d.ln" % k, s.ln.weight, s.ln.bias, s.ln.eps),
                                     b.linear("stages.%d.fc" % k, s.fc.weight, s.fc.bias, "gelu")])],
                        exit=[b.layernorm("exits.%d.ln" % k, e.ln.weight, e.ln.bias, e.ln.eps),
                              b.linear("exits.%d.fc" % k, e.fc.weight, e.fc.bias)])
        return b


@torch.no_grad()
def accuracies(logits_list, y):
    return [float((lg.argmax(1) == y).float().mean()) for lg in logits_list]


@torch.no_grad()
def eval_module(model, x, y, batch=2000, sample_shape=None):
    """Per-exit logits and accuracies of `model` on x (reshaped to sample_shape if given)."""
    model.eval()
    outs = None
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        o = model(xb if sample_shape is None else xb.reshape(-1, *sample_shape))
        outs = [[t] for t in o] if outs is None else [a + [t] for a, t in zip(outs, o)]
    logits = [torch.cat(a) for a in outs]
    return logits, accuracies(logits, y)


def start_run(args):
    """Threads and seeds from args, the data, and the input normalisation: the train
    split's pixel mean and population std, rounded to float32 and 9 digits as stored.
    Returns (rng, t_start, data, mean, std)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    data = load_fmnist()
    xtr = data["train"][0]
    mean = export._cfg_float(xtr.double().mean().item())
    std = export._cfg_float(xtr.double().std(unbiased=False).item())
    print("train split: %d images, pixel mean %.9g std %.9g" % (xtr.shape[0], mean, std))
    return rng, t_start, data, mean, std


def save_model(model, args):
    """Exports the model (eval mode) to args.out and checks that the hand-written reader
    gives back every tensor bit for bit. Returns (config, tensors)."""
    model.eval()
    builder = model.to_builder()
    builder.save(args.out, dtype="F32", metadata={
        "dataset": "fashion-mnist", "train_split": "fashion-mnist:train (train images 0..49999)",
        "seed": str(args.seed), "epochs": str(args.epochs)})
    cfg, tensors, dtypes = export.load_model(args.out)
    assert set(dtypes.values()) == {"F32"}
    for name, t in builder.tensors.items():
        assert torch.equal(t, tensors[name]), name
    return cfg, tensors


def exit_table(acc, flops):
    """The README's table: accuracy and FLOPs per exit."""
    lines = ["| exit | after stage | val acc | test acc | FLOPs (exit path) | share of full | "
             "FLOPs (cascade, all exits 0..k) | share of full |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, fr in enumerate(flops):
        lines.append("| %d | %d | %.2f%% | %.2f%% | %s | %.1f%% | %s | %.1f%% |" % (
            k, k, 100 * acc["val"][k], 100 * acc["test"][k], format(fr["exit_path"], ","),
            100.0 * fr["exit_path"] / fr["full"], format(fr["cascade"], ","),
            100.0 * fr["cascade"] / fr["full"]))
    return "\n".join(lines)


def write_fixture(args, data, ref_logits, acc):
    """The test fixture: the exported model's logits at every exit for the first 16 test
    images, and the per-exit accuracies."""
    yt = data["test"][1]
    fx = {
        "indices": list(range(16)),
        "labels": [int(v) for v in yt[:16]],
        "exit_logits": [[[float(v) for v in row] for row in lg[:16]] for lg in ref_logits["test"]],
        "test_accuracy_per_exit": [export.ExactFloat(round(a, 6)) for a in acc["test"]],
        "val_accuracy_per_exit": [export.ExactFloat(round(a, 6)) for a in acc["val"]],
    }
    os.makedirs(os.path.dirname(args.fixture), exist_ok=True)
    export.write_json(args.fixture, fx)
    print("wrote %s, %s" % (args.out, args.fixture))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--hflip", type=float, default=0.5, help="probability of a horizontal flip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "fmnist-mlp"))
    ap.add_argument("--fixture", default=os.path.join(ROOT, "test", "fixtures", "fmnist-mlp-reference.json"))
    args = ap.parse_args()

    rng, t_start, data, mean, std = start_run(args)
    xtr, ytr = data["train"]

    model = EarlyExitMLP(mean, std, dropout=args.dropout)
    n_exits = model.depth + 1
    loss_w = [(k + 1) / sum(range(1, n_exits + 1)) for k in range(n_exits)]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (xtr.shape[0] + args.batch - 1) // args.batch
    total_steps = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total_steps) / total_steps)))

    xval, yval = data["val"]
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        perm = torch.from_numpy(rng.permutation(xtr.shape[0]))
        flips = torch.from_numpy(rng.random(xtr.shape[0]) < args.hflip)
        tot, n = 0.0, 0
        for i in range(0, xtr.shape[0], args.batch):
            idx = perm[i:i + args.batch]
            xb, yb = xtr[idx], ytr[idx]
            fb = flips[i:i + args.batch]
            if args.hflip > 0 and bool(fb.any()):
                xb = torch.where(fb.view(-1, 1, 1), xb.flip(-1), xb)
            outs = model(xb)
            loss = sum(w * F.cross_entropy(o, yb) for w, o in zip(loss_w, outs))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * xb.shape[0]
            n += xb.shape[0]
        _, vacc = eval_module(model, xval, yval)
        print("epoch %2d  loss %.4f  val acc %s  (%.1fs)" % (
            epoch + 1, tot / n, " ".join("%.4f" % a for a in vacc), time.time() - t0), flush=True)
    train_time = time.time() - t_start

    # trained-module accuracies
    mod_acc = {}
    mod_logits = {}
    for split in ("val", "test"):
        mod_logits[split], mod_acc[split] = eval_module(model, *data[split])

    # export and verify via the hand-written reader + reference forward
    cfg, tensors = save_model(model, args)
    acc = {}
    ref_logits = {}
    for split in ("val", "test"):
        x, y = data[split]
        ref_logits[split] = export.forward_exits(args.out, x.reshape(-1, 1, 28, 28))
        acc[split] = accuracies(ref_logits[split], y)
        diff = max(float((a - b).abs().max()) for a, b in zip(ref_logits[split], mod_logits[split]))
        print("%s: exported-model accuracies %s; trained module %s; max |logit diff| %.3g" % (
            split, ["%.4f" % a for a in acc[split]], ["%.4f" % a for a in mod_acc[split]], diff))
        assert diff < 1e-3, diff
        for a, b in zip(acc[split], mod_acc[split]):
            assert abs(a - b) <= 1.0 / x.shape[0] + 1e-12, (a, b)
    assert acc["test"][-1] >= 0.88, "final-exit test accuracy %.4f < 0.88" % acc["test"][-1]

    # report
    flops = export.model_flops(cfg)
    table = exit_table(acc, flops)
    print(table)
    print("training + evaluation time: %.1f s" % train_time)

    st_size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    n_params = sum(t.numel() for t in tensors.values())
    readme = README_TEMPLATE.format(
        epochs=args.epochs, seed=args.seed, batch=args.batch, lr=args.lr, wd=args.weight_decay,
        dropout=args.dropout, hflip=args.hflip, threads=args.threads, mean=mean, std=std,
        weights=", ".join("%d/15" % (k + 1) for k in range(n_exits)), table=table,
        other=format(export.model_other_flops(cfg), ","),
        other_pct=100.0 * export.model_other_flops(cfg) / flops[-1]["full"],
        train_time=train_time, full=format(flops[-1]["full"], ","), n_params=format(n_params, ","),
        st_size=format(st_size, ","), torch_version=torch.__version__)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(readme)

    write_fixture(args, data, ref_logits, acc)


README_TEMPLATE = """# fmnist-mlp

Early-exit MLP for Fashion-MNIST (28x28 grey images, 10 classes) in the exitrt model
format (`../FORMAT.md`): `config.json` + `model.safetensors` (F32, {n_params} parameters,
{st_size} bytes).

## Architecture

| stage | body | exit head |
|---|---|---|
| 0 | flatten, linear 784->512 relu | linear 512->10 |
| 1-4 | residual(layernorm 512, linear 512->512 gelu) | layernorm 512, linear 512->10 |

Input: raw pixels / 255, normalised with the train split's pixel mean {mean} and
std {std} (population std) before the first linear.

## Training

    /usr/bin/python3 models/train_fmnist_mlp.py --epochs {epochs} --seed {seed}

(the defaults; the script regenerates this file, `config.json`, `model.safetensors` and
`test/fixtures/fmnist-mlp-reference.json`).

- Data: Fashion-MNIST training images 0..49999 (`fashion-mnist:train`); images
  50000..59999 are `fashion-mnist:val` (reporting only, no model selection); test = t10k.
- All exits trained jointly. Loss = sum over exits k of w_k * cross-entropy(exit k), with
  w_k = (k+1)/15, i.e. {weights}.
- AdamW (lr {lr}, weight decay {wd}), batch {batch}, {epochs} epochs, cosine LR decay to 0
  (per step, no warm-up), `torch.manual_seed({seed})` and a numpy generator seeded with
  {seed} for shuffling/augmentation, `torch.set_num_threads({threads})`, torch {torch_version}.
- Regularisation used only during training (not part of the exported graph): dropout
  {dropout} after the stage-0 relu and on each residual branch (after the gelu); random
  horizontal flips with probability {hflip}.
- Wall time (training + evaluation on 2 CPU cores): {train_time:.0f} s.

After export the script re-reads `model.safetensors` with a hand-written reader
(`models/export.py`) and runs the FORMAT.md reference forward (`export.forward_exits`)
from `config.json`; the accuracies below come from that exported model and agree with the
trained PyTorch module.

## Accuracy and cost per exit

FLOPs count only the linear layers, 2*in*out each.  Biases, activations, layernorms,
residual adds and the input normalisation are left out; counted roughly (bias 1/output,
relu/gelu 1/element, layernorm 8/element, residual add 1/element, normalisation
2/input element) they add {other} FLOPs to the full model ({other_pct:.1f}%).
"Exit path" = stages 0..k plus exit head k; "cascade" = stages 0..k plus the heads of all
exits 0..k (the cost when every earlier exit was evaluated and declined). Full model =
all five stages + the final exit head = {full} FLOPs per sample.

{table}
"""


if __name__ == "__main__":
    main()
