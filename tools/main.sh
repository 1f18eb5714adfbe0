#!/usr/bin/env bash
# The main job: sets up (tools/setup.sh) and compares the exit policies on the shipped
# model over the Fashion-MNIST test split, on the GPU when one is present, else the CPU.
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
"$exitrt" info --model models/fmnist-mlp
echo
"$exitrt" compare --model models/fmnist-mlp --data fashion-mnist:test --device "$device" --batch 256 "$@"
