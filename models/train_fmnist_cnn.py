#!/usr/bin/python3
"""Train the early-exit CNN ``models/fmnist-cnn`` on Fashion-MNIST and export it.

Usage (from anywhere; paths are relative to the repository):

    /usr/bin/python3 models/train_fmnist_cnn.py [--epochs 12] [--seed 0]

Architecture (3 stages, 3 exits; every conv 3x3, stride 1, padding 1, with batch norm
during training, folded into the conv's weight and bias at export):
    stage0 = conv 1->32 relu, maxpool 2 (28->14), conv 32->32 relu    [32, 14, 14]
             exit0 = avgpool 2 (-> [32, 7, 7]), flatten, linear 1568->10
    stage1 = conv 32->64 relu, maxpool 2 (14->7), conv 64->64 relu    [64, 7, 7]
             exit1 = global_avgpool, flatten, linear 64->10
    stage2 = conv 64->128 relu, maxpool 2 padding 1 (7->4), flatten, linear 2048->256 relu
             exit2 = linear 256->10 (the final exit)
Data: Fashion-MNIST from /usr/share/datasets/fashion-mnist; training images 0..49999 are
``fashion-mnist:train``, 50000..59999 ``fashion-mnist:val`` (reporting only), t10k the
test set.  Pixels are u8/255; normalisation mean/std are the train split's.

Objective (compute-aware exit weighting + self-distillation from the final exit):

    L = CE(z_K, y) + sum_{k<K} w_k * [ CE(z_k, y) + beta * T^2 * KL(q_K || q_k) ]
    w_k = 1 - FLOPs_k / FLOPs_full,   q_k = softmax(z_k / T),  q_K detached

with FLOPs_k the cost of exit k's path (stages 0..k + head k, 2*MACs of convs and
linears, ``export.model_flops``), FLOPs_full that of the final exit (so w_K would be 0;
the final exit gets weight 1), T = 3, beta = 1.  KL(q_K || q_k) = sum_c q_K log(q_K/q_k),
batch mean.

Writes model.safetensors, config.json and README.md in models/fmnist-cnn/ and
test/fixtures/fmnist-cnn-reference.json.
"""

import argparse
import os
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
from train_fmnist_mlp import (  # noqa: E402  (same data, same splits, same export and report)
    CLASSES, accuracies, exit_table, save_model, start_run, write_fixture)
from train_fmnist_mlp import eval_module as eval_mlp_style  # noqa: E402


class ConvBN(nn.Module):
    """conv 3x3 stride 1 padding 1 (no bias) + batch norm; relu applied by the caller."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return self.bn(self.conv(x))

    @torch.no_grad()
    def folded(self):
        """Weight and bias of the conv with the (eval-mode) batch norm folded in, computed
        in float64 and rounded once to float32:
        W' = W * g / sqrt(var + eps),  b' = beta - mean * g / sqrt(var + eps)."""
        bn = self.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = self.conv.weight.double() * scale.view(-1, 1, 1, 1)
        b = bn.bias.double() - bn.running_mean.double() * scale
        return w.float(), b.float()


class Node(nn.Module):
    pass


class EarlyExitCNN(nn.Module):
    """Module layout mirrors the tensor names: stages.K.convJ, stages.2.fc, exits.K.fc."""

    def __init__(self, mean, std, widths=(32, 64, 128), hidden=256, n_cls=10, dropout=0.3):
        super().__init__()
        self.mean, self.std = float(mean), float(std)
        c0, c1, c2 = widths
        self.widths, self.hidden = widths, hidden
        self.stages = nn.ModuleList()
        self.exits = nn.ModuleList()
        s0 = Node()
        s0.conv0, s0.conv1 = ConvBN(1, c0), ConvBN(c0, c0)
        s1 = Node()
        s1.conv0, s1.conv1 = ConvBN(c0, c1), ConvBN(c1, c1)
        s2 = Node()
        s2.conv0 = ConvBN(c1, c2)
        s2.fc = nn.Linear(c2 * 4 * 4, hidden)
        self.stages.extend([s0, s1, s2])
        for n_in in (c0 * 7 * 7, c1, hidden):
            e = Node()
            e.fc = nn.Linear(n_in, n_cls)
            self.exits.append(e)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """``x``: raw pixels in [0, 1], ``[N, 1, 28, 28]``; returns the logits per exit."""
        s0, s1, s2 = self.stages
        h = (x - self.mean) / self.std
        h = F.max_pool2d(F.relu(s0.conv0(h)), 2)
        h = F.relu(s0.conv1(h))
        outs = [self.exits[0].fc(F.avg_pool2d(h, 2).flatten(1))]
        h = F.max_pool2d(F.relu(s1.conv0(h)), 2)
        h = F.relu(s1.conv1(h))
        outs.append(self.exits[1].fc(h.mean(dim=(2, 3))))
        h = F.max_pool2d(F.relu(s2.conv0(h)), 2, 2, 1)  # -inf padding: 7 -> 4, no row dropped
        h = F.relu(s2.fc(self.drop(h.flatten(1))))
        outs.append(self.exits[2].fc(self.drop(h)))
        return outs

    def to_builder(self):
        """The eval-mode model in the FORMAT.md graph, batch norm folded into the convs."""
        b = export.ModelBuilder("fmnist-cnn", [1, 28, 28], CLASSES, mean=[self.mean],
                                std=[self.std], layout="NCHW")

        def conv(prefix, m):
            w, bias = m.folded()
            return b.conv2d(prefix, w, bias, stride=[1, 1], padding=[1, 1], dilation=[1, 1],
                            groups=1, activation="relu")

        s0, s1, s2 = self.stages
        e0, e1, e2 = self.exits
        b.add_stage("stage0",
                    [conv("stages.0.conv0", s0.conv0), b.maxpool([2, 2], [2, 2], [0, 0]),
                     conv("stages.0.conv1", s0.conv1)],
                    exit=[b.avgpool([2, 2], [2, 2], [0, 0]), b.flatten(),
                          b.linear("exits.0.fc", e0.fc.weight, e0.fc.bias)])
        b.add_stage("stage1",
                    [conv("stages.1.conv0", s1.conv0), b.maxpool([2, 2], [2, 2], [0, 0]),
                     conv("stages.1.conv1", s1.conv1)],
                    exit=[b.global_avgpool(), b.flatten(),
                          b.linear("exits.1.fc", e1.fc.weight, e1.fc.bias)])
        b.add_stage("stage2",
                    [conv("stages.2.conv0", s2.conv0), b.maxpool([2, 2], [2, 2], [1, 1]),
                     b.flatten(), b.linear("stages.2.fc", s2.fc.weight, s2.fc.bias, "relu")],
                    exit=[b.linear("exits.2.fc", e2.fc.weight, e2.fc.bias)])
        return b


def augment(xb, rng, pad, hflip):
    """Random crop (zero padding ``pad``, i.e. background) and horizontal flip, per sample.
    ``xb``: [B, 28, 28]."""
    n, h, w = xb.shape
    if hflip > 0:
        flips = torch.from_numpy(rng.random(n) < hflip)
        xb = torch.where(flips.view(-1, 1, 1), xb.flip(-1), xb)
    if pad > 0:
        off = rng.integers(0, 2 * pad + 1, size=(n, 2))
        xp = F.pad(xb, (pad, pad, pad, pad))
        out = torch.empty_like(xb)
        keys = off[:, 0] * (2 * pad + 1) + off[:, 1]
        for key in np.unique(keys):
            idx = torch.from_numpy(np.nonzero(keys == key)[0])
            dy, dx = divmod(int(key), 2 * pad + 1)
            out[idx] = xp[idx, dy:dy + h, dx:dx + w]
        xb = out
    return xb


@torch.no_grad()
def eval_module(model, x, y, batch=1000):
    return eval_mlp_style(model, x, y, batch=batch, sample_shape=(1, 28, 28))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup", type=float, default=0.5, help="linear LR warm-up, epochs")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=3.0)
    ap.add_argument("--distill", type=float, default=1.0, help="beta, weight of the KL term")
    ap.add_argument("--crop-pad", type=int, default=2)
    ap.add_argument("--hflip", type=float, default=0.5, help="probability of a horizontal flip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=0, help="debug: use only this many train images")
    ap.add_argument("--min-test-acc", type=float, default=0.91)
    ap.add_argument("--out", default=os.path.join(HERE, "fmnist-cnn"))
    ap.add_argument("--fixture", default=os.path.join(ROOT, "test", "fixtures", "fmnist-cnn-reference.json"))
    args = ap.parse_args()

    rng, t_start, data, mean, std = start_run(args)  # normalisation from the whole train split
    xtr, ytr = data["train"]
    if args.train_limit:
        xtr, ytr = xtr[:args.train_limit], ytr[:args.train_limit]

    model = EarlyExitCNN(mean, std, dropout=args.dropout)
    flops = export.model_flops(model.to_builder().config())
    n_exits = len(flops)
    loss_w = [1.0 - fr["exit_path"] / fr["full"] for fr in flops[:-1]] + [1.0]
    print("exit FLOPs %s; loss weights %s" % ([fr["exit_path"] for fr in flops],
                                             ["%.4f" % w for w in loss_w]))
    T = args.temperature

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (xtr.shape[0] + args.batch - 1) // args.batch
    total_steps = args.epochs * steps_per_epoch
    warm = max(1, int(args.warmup * steps_per_epoch))

    def lr_factor(s):
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + np.cos(np.pi * min(s - warm, total_steps - warm) / (total_steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    xval, yval = data["val"]
    epoch_times = []
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        perm = torch.from_numpy(rng.permutation(xtr.shape[0]))
        tot, tot_ce, n = 0.0, [0.0] * n_exits, 0
        for i in range(0, xtr.shape[0], args.batch):
            idx = perm[i:i + args.batch]
            xb = augment(xtr[idx], rng, args.crop_pad, args.hflip).unsqueeze(1)
            yb = ytr[idx]
            outs = model(xb)
            ces = [F.cross_entropy(o, yb) for o in outs]
            q_final = F.softmax(outs[-1].detach() / T, dim=1)
            loss = ces[-1]
            for k in range(n_exits - 1):
                kl = F.kl_div(F.log_softmax(outs[k] / T, dim=1), q_final, reduction="batchmean")
                loss = loss + loss_w[k] * (ces[k] + args.distill * T * T * kl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * xb.shape[0]
            tot_ce = [a + c.item() * xb.shape[0] for a, c in zip(tot_ce, ces)]
            n += xb.shape[0]
        _, vacc = eval_module(model, xval, yval)
        epoch_times.append(time.time() - t0)
        print("epoch %2d  loss %.4f  CE %s  val acc %s  (%.1fs)" % (
            epoch + 1, tot / n, " ".join("%.3f" % (c / n) for c in tot_ce),
            " ".join("%.4f" % a for a in vacc), epoch_times[-1]), flush=True)
    train_time = time.time() - t_start

    # trained-module (eval mode, batch norm unfolded) accuracies
    mod_acc, mod_logits = {}, {}
    for split in ("val", "test"):
        mod_logits[split], mod_acc[split] = eval_module(model, *data[split])

    # export (batch norm folded) and verify via the hand-written reader + reference forward
    cfg, tensors = save_model(model, args)
    acc, ref_logits = {}, {}
    for split in ("val", "test"):
        x, y = data[split]
        ref_logits[split] = export.forward_exits(args.out, x.reshape(-1, 1, 28, 28))
        acc[split] = accuracies(ref_logits[split], y)
        diff = max(float((a - b).abs().max()) for a, b in zip(ref_logits[split], mod_logits[split]))
        flips = [int((a.argmax(1) != b.argmax(1)).sum()) for a, b in zip(ref_logits[split], mod_logits[split])]
        print("%s: exported (folded) accuracies %s; trained module %s; max |logit diff| %.3g; "
              "argmax changes per exit %s" % (split, ["%.4f" % a for a in acc[split]],
                                               ["%.4f" % a for a in mod_acc[split]], diff, flips))
        assert diff < 1e-3, diff
        assert acc[split] == mod_acc[split], (acc[split], mod_acc[split])
    assert acc["test"][-1] >= args.min_test_acc, "final-exit test accuracy %.4f < %.2f" % (
        acc["test"][-1], args.min_test_acc)

    # report
    flops = export.model_flops(cfg)
    table = exit_table(acc, flops)
    print(table)
    print("training + evaluation time: %.1f s" % train_time)

    st_size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    n_params = sum(t.numel() for t in tensors.values())
    other = export.model_other_flops(cfg)
    readme = README_TEMPLATE.format(
        epochs=args.epochs, seed=args.seed, batch=args.batch, lr=args.lr, wd=args.weight_decay,
        warmup=args.warmup, dropout=args.dropout, hflip=args.hflip, crop_pad=args.crop_pad,
        threads=args.threads, mean=mean, std=std, T=args.temperature, beta=args.distill,
        weights=", ".join("w_%d = %.4f" % (k, w) for k, w in enumerate(loss_w[:-1])),
        table=table, other=format(other, ","), other_pct=100.0 * other / flops[-1]["full"],
        train_time=train_time, ep_min=min(epoch_times), ep_max=max(epoch_times), full=format(flops[-1]["full"], ","), n_params=format(n_params, ","),
        st_size=format(st_size, ","), torch_version=torch.__version__,
        train_cmd="/usr/bin/python3 models/train_fmnist_cnn.py --epochs %d --seed %d" % (args.epochs, args.seed)
        + (" --train-limit %d" % args.train_limit if args.train_limit else ""))
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(readme)

    write_fixture(args, data, ref_logits, acc)


README_TEMPLATE = """# fmnist-cnn

Early-exit CNN for Fashion-MNIST (28x28 grey images, 10 classes) in the exitrt model
format (`../FORMAT.md`, convolutional ops, NCHW): `config.json` + `model.safetensors`
(F32, {n_params} parameters, {st_size} bytes).

## Architecture

Every conv is 3x3, stride 1, padding 1, relu; batch norm (used in training) is folded
into the conv's weight and bias at export (`W' = W g / sqrt(var + eps)`,
`b' = beta - mean g / sqrt(var + eps)`, computed in float64, rounded once to float32).

| stage | body | output | exit head |
|---|---|---|---|
| 0 | conv 1->32, maxpool 2, conv 32->32 | [32, 14, 14] | avgpool 2 (-> [32, 7, 7]), flatten, linear 1568->10 |
| 1 | conv 32->64, maxpool 2, conv 64->64 | [64, 7, 7] | global_avgpool, flatten, linear 64->10 |
| 2 | conv 64->128, maxpool 2 padding 1 (7->4), flatten, linear 2048->256 relu | [256] | linear 256->10 (final) |

Input: raw pixels / 255, normalised with the train split's pixel mean {mean} and
std {std} (population std) before the first conv.

## Training

    {train_cmd}

(the defaults; the script regenerates this file, `config.json`, `model.safetensors` and
`test/fixtures/fmnist-cnn-reference.json`).

- Data: Fashion-MNIST training images 0..49999 (`fashion-mnist:train`); images
  50000..59999 are `fashion-mnist:val` (reporting only, no model selection); test = t10k.
- Objective: all exits trained jointly with a compute-aware weighting of the exits'
  cross-entropies and self-distillation from the final exit K:

      L = CE(z_K, y) + sum_{{k<K}} w_k * [ CE(z_k, y) + beta * T^2 * KL(q_K || q_k) ]
      w_k = 1 - FLOPs_k / FLOPs_full,   q_k = softmax(z_k / T),   q_K detached (no gradient)

  FLOPs_k is the cost of exit k's path (column "FLOPs (exit path)" below), FLOPs_full
  that of the final exit; an early exit's weight is the share of the compute it saves
  ({weights}; the final exit's cross-entropy has weight 1). T = {T}, beta = {beta};
  KL(q_K || q_k) = sum_c q_K,c log(q_K,c / q_k,c), averaged over the batch.
- AdamW (lr {lr}, weight decay {wd}), batch {batch}, {epochs} epochs, linear warm-up over
  {warmup} epoch then cosine LR decay to 0 (per step), `torch.manual_seed({seed})` and a
  numpy generator seeded with {seed} for shuffling/augmentation,
  `torch.set_num_threads({threads})`, torch {torch_version}.
- Regularisation used only during training (not part of the exported graph): batch norm
  (folded), dropout {dropout} before `stages.2.fc` and before `exits.2.fc`; random crops
  (zero padding {crop_pad}, i.e. shifts of up to {crop_pad} pixels) and horizontal flips
  with probability {hflip}.
- Wall time (training + evaluation on 2 CPU cores shared with other jobs): {train_time:.0f} s;
  the epochs took {ep_min:.0f} to {ep_max:.0f} s each (including a validation pass).

After export the script re-reads `model.safetensors` with a hand-written reader
(`models/export.py`) and runs the FORMAT.md reference forward (`export.forward_exits`:
`F.conv2d`, `F.max_pool2d`, `F.avg_pool2d(count_include_pad=True)`) from `config.json`;
the accuracies below come from that exported (folded) model and are identical to the
trained PyTorch module's (eval mode, unfolded batch norm) on every exit and split.

## Accuracy and cost per exit

FLOPs count 2*MACs of the convs (2 * C_out * H_out * W_out * C_in/groups * kh * kw) and
linears (2 * in * out).  Left out: biases, relus, pooling, the input normalisation (and
batch norm, which is folded away); counted roughly (bias 1/output, relu 1/element,
maxpool kh*kw-1 and avgpool kh*kw per output, global_avgpool 1/input element,
normalisation 2/input element) they add {other} FLOPs to the full model ({other_pct:.1f}%).
"Exit path" = stages 0..k plus exit head k; "cascade" = stages 0..k plus the heads of all
exits 0..k (the cost when every earlier exit was evaluated and declined). Full model =
all stages + the final exit head = {full} FLOPs per sample.

{table}
"""


if __name__ == "__main__":
    main()
