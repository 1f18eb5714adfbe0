#!/usr/bin/env bash
# Load test peaks (README "Load testing" table), before and after the CPU threads change,
# one after the other in one run: OLD = exitrt at e90158a with OPENBLAS_NUM_THREADS=1 (how
# the README's numbers were taken), NEW = this commit with its defaults (1 stream: the
# session's ops on both cores). fmnist-mlp, batch <= 64, delay 2 ms, p99 <= 20 ms, trials of
# 40000 requests (NEW tests rates up to 40000 / (20 x 20 ms) = 100k qps; the README's old
# table used 10000, whose bursts at fixed:0's rates lasted under 8 x the bound).
# Usage: OLD=/path/exitrt NEW=/path/exitrt bash loadtest.sh > loadtest.txt
set -u
cd "$(dirname "$0")/../../.."
C="loadtest -m models/fmnist-mlp -d fashion-mnist:test --max-batch 64 --max-delay-ms 2 --slo-ms 20 --find-peak --requests 40000 -p none -p confidence:0.9 -p fixed:0"
echo "machine: $(nproc) cores, $(date -u +%FT%TZ), $(uptime)"
echo "== OLD (OPENBLAS_NUM_THREADS=1)"; OPENBLAS_NUM_THREADS=1 "$OLD" $C 2>&1 | sed -n '/^peak under/,$p' 
echo "== NEW"; "$NEW" $C 2>&1 | sed -n '/^peak under/,$p' 
