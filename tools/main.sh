#!/usr/bin/env bash
# The main job: sets up (tools/setup.sh), then compares the exit policies of the shipped
# models on the Fashion-MNIST test split, on the GPU when one is present, else the CPU:
#   - exitrt sweep: every policy over a grid of operating points, accuracy and measured
#     latency, the Pareto frontier (printed), a per-exit threshold search chosen on
#     fashion-mnist:val, plots;
#   - exitrt select: the best point within half of the full model's latency;
#   - exitrt shift-report: the chosen points under corrupted inputs.
# Results and plots go to results/ (git-ignored). Extra arguments go to every sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exitrt=${BUILD_DIR:-build}/exitrt
device=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  device=cuda:0
fi
# A CUDA device is used only if this build has the CUDA backend and it starts.
if [ "$device" != cpu ] && ! "$exitrt" eval --model models/fmnist-mlp --data fashion-mnist:test \
      --limit 256 --device "$device" >/dev/null 2>&1; then
  echo "exitrt: $device unavailable in this build; using the CPU" >&2
  device=cpu
fi
echo "== exitrt main job on $device"
mkdir -p results
for model in models/fmnist-mlp models/fmnist-cnn; do
  name=$(basename "$model")
  echo
  "$exitrt" info --model "$model"
  echo
  "$exitrt" sweep --model "$model" --data fashion-mnist:test --device "$device" --batch 256 --grid 8 \
      --per-exit-search --budget-flops 0.35 --out "results/sweep-$name" --plot "$@"
  "$exitrt" select --from "results/sweep-$name" --latency-budget 50% --plot \
      || echo "exitrt select: nothing within 50% of the full model's latency for $name"
done
policies=(--policy none --policy confidence:0.9 --policy patience:2)
[ -f results/sweep-fmnist-mlp/policy.json ] && policies+=(--policy results/sweep-fmnist-mlp/policy.json)
echo
"$exitrt" shift-report --model models/fmnist-mlp --data fashion-mnist:test --device "$device" --batch 256 \
    "${policies[@]}" --out results/shift-fmnist-mlp --plot
echo
echo "results and plots: results/sweep-fmnist-mlp, results/sweep-fmnist-cnn, results/shift-fmnist-mlp"
