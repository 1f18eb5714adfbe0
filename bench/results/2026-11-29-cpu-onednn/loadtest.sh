#!/usr/bin/env bash
# Load-test peaks, oneDNN vs OpenBLAS linear ops (ERT_CPU_GEMM), one binary, one run:
# the README table's configuration (fmnist-mlp, batch <= 64, delay 2 ms, p99 <= 20 ms,
# trials of 40,000 requests) and gpu_check.sh's (p99 <= 5 ms, 60,000 requests).
# Usage: bash loadtest.sh > loadtest.txt
set -u
cd "$(dirname "$0")/../../.."
exitrt=${EXITRT:-build/exitrt}
P="-m models/fmnist-mlp -d fashion-mnist:test --max-batch 64 --max-delay-ms 2 --find-peak -p none -p confidence:0.9 -p fixed:0"
echo "machine: $(nproc) cores, $(date -u +%FT%TZ), $(uptime), commit $(git rev-parse --short HEAD)"
for slo in "20 40000" "5 60000"; do
  set -- $slo
  for gemm in onednn openblas; do
    echo "== ERT_CPU_GEMM=$gemm, p99 <= $1 ms, $2 requests per trial"
    ERT_CPU_GEMM=$gemm "$exitrt" loadtest $P --slo-ms "$1" --requests "$2" 2>&1 | sed -n '/^loadtest\|device\|^peak under/,$p'
  done
done
