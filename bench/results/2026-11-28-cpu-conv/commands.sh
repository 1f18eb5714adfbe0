#!/usr/bin/env bash
# CPU convolutions, before and after (bench/NOTES.md, "CPU convolutions"), side by side in one
# run: OLD = exitrt built at d306856, NEW = the change (both RelWithDebInfo, tools/setup.sh's
# build), alternating, fmnist-cnn on the Fashion-MNIST test split, policy none (every stage).
# Usage: OLD=/path/exitrt NEW=/path/exitrt bash commands.sh > run.txt
set -u
cd "$(dirname "$0")/../../.."
run() { "$1" eval --model models/fmnist-cnn --data fashion-mnist:test --policy none "${@:2}" 2>&1; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(date -u +%FT%TZ)"
for spec in "256 2048" "16 512" "1 256"; do
  set -- $spec
  echo "batch $1 ($2 samples): batch latency p50 ms, 5 alternating runs"
  for i in 1 2 3 4 5; do
    printf "  old %8s   new %8s\n" "$(run "$OLD" --batch $1 --limit $2 | grep -o 'p50 [0-9.]*' | cut -d' ' -f2)" \
      "$(run "$NEW" --batch $1 --limit $2 | grep -o 'p50 [0-9.]*' | cut -d' ' -f2)"
  done
done
for t in 1 2; do
  echo "OPENBLAS_NUM_THREADS=$t, batch 256: per-stage profile (8 batches summed)"
  for b in OLD NEW; do
    echo "  $b"; OPENBLAS_NUM_THREADS=$t run "${!b}" --batch 256 --limit 2048 --profile | grep -E '^ +[0-9] +2048 +2048|^batch time' | sed 's/^/    /'
  done
done
