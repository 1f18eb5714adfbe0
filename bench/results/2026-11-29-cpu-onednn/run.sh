#!/usr/bin/env bash
# oneDNN vs OpenBLAS linear ops, side by side in one binary (ERT_CPU_GEMM), alternating.
# Prints: model batch policy gemm run p50_ms mean_ms accuracy mean_exit
set -euo pipefail
exitrt=${EXITRT:-build/exitrt}
runs=${RUNS:-3}
for model in fmnist-mlp fmnist-cnn; do
  for batch in 1 16 64 256; do
    limit=10000
    [ "$batch" = 1 ] && limit=2000
    [ "$model" = fmnist-cnn ] && [ "$batch" -le 16 ] && limit=2000
    for policy in none confidence:0.9; do
      for run in $(seq "$runs"); do
        for gemm in onednn openblas; do
          ERT_CPU_GEMM=$gemm "$exitrt" eval --model "models/$model" --data fashion-mnist:test --policy "$policy" \
            --batch "$batch" --limit "$limit" --json |
            python3 -c "import json,sys; d=json.load(sys.stdin); l=d['latency_ms']; print('$model', $batch, '$policy', '$gemm', $run, '%.3f' % l['p50'], '%.3f' % l['mean'], d['accuracy'], '%.4f' % d['mean_exit'])"
        done
      done
    done
  done
done
