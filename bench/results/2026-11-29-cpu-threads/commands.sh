#!/usr/bin/env bash
# CPU threads, before and after (bench/NOTES.md, "CPU threads"), side by side in one run:
# OLD = exitrt built at e90158a (OpenBLAS's own threads), NEW = the change (OpenMP over an
# op's blocks, OpenBLAS on one thread), both RelWithDebInfo (tools/setup.sh's build),
# alternating, on the Fashion-MNIST test split, policy none (every stage), default
# threads (this VM: 2 cores). Then each binary on 1 thread (OPENBLAS_NUM_THREADS=1 for
# OLD, ERT_CPU_THREADS=1 for NEW) against its default, to show the scaling.
# Usage: OLD=/path/exitrt NEW=/path/exitrt bash commands.sh > run.txt
set -u
cd "$(dirname "$0")/../../.."
run() { "$1" eval --model "models/$2" --data fashion-mnist:test --policy none "${@:3}" 2>&1; }
p50() { grep -o 'p50 [0-9.]*' | cut -d' ' -f2; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(date -u +%FT%TZ)"
for model in fmnist-cnn fmnist-mlp; do
  for spec in "256 2048" "16 512" "1 256"; do
    set -- $spec
    echo "$model batch $1 ($2 samples): batch latency p50 ms, 5 alternating runs"
    for i in 1 2 3 4 5; do
      printf "  old %8s   new %8s\n" "$(run "$OLD" $model --batch $1 --limit $2 | p50)" \
        "$(run "$NEW" $model --batch $1 --limit $2 | p50)"
    done
  done
done
echo "fmnist-cnn batch 256 (2048 samples), p50 ms on 1 thread and on the default (3 alternating runs)"
for i in 1 2 3; do
  printf "  old 1: %8s  old default: %8s   new 1: %8s  new default: %8s\n" \
    "$(OPENBLAS_NUM_THREADS=1 run "$OLD" fmnist-cnn --batch 256 --limit 2048 | p50)" \
    "$(run "$OLD" fmnist-cnn --batch 256 --limit 2048 | p50)" \
    "$(ERT_CPU_THREADS=1 run "$NEW" fmnist-cnn --batch 256 --limit 2048 | p50)" \
    "$(run "$NEW" fmnist-cnn --batch 256 --limit 2048 | p50)"
done
echo "the same answers: per-sample CSVs of both binaries, confidence:0.9 (predictions and exits; confidences may differ in the last digit)"
for model in fmnist-cnn fmnist-mlp; do
  for b in OLD NEW; do
    "${!b}" eval --model models/$model --data fashion-mnist:test --policy confidence:0.9 --output /tmp/ab-$b.csv > /dev/null
  done
  echo "  $model: $(paste -d, /tmp/ab-OLD.csv /tmp/ab-NEW.csv | awk -F, 'NR > 1 { n++; if ($3 != $8 || $4 != $9) d++ } END { print d + 0 " of " n }') samples differ in prediction or exit"
done
