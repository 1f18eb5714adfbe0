#!/bin/bash
# side by side, alternating: old = a worktree of 4d17414 (GELU through glibc's erff after
# the GEMM, row-wise ops on the calling thread), new = this tree; RelWithDebInfo, ERT_CUDA=OFF
cd /work/main
for rep in 1 2 3; do
for b in 1 16 256; do
  for v in old new; do
    case $v in old) bin=/tmp/wt-old/b/exitrt;; new) bin=build/exitrt;; esac
    for pol in none confidence:0.86691,0,0.673867,0.673867; do
      lim=$([ $b = 1 ] && echo 1000 || echo 10000)
      r=$($bin eval --model models/fmnist-mlp --data fashion-mnist:test --policy $pol --batch $b --limit $lim 2>&1 | grep -E "batch latency|^accuracy" | tr '\n' ' ')
      echo "rep$rep b$b $v $pol: $r"
    done
  done
done
done
