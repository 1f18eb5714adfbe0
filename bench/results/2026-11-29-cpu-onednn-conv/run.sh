#!/bin/bash
# side by side: old binary (OpenBLAS convs), new binary on oneDNN convs, new on OpenBLAS
cd /work/main
for rep in 1 2 3; do
for b in 1 16 256; do
  for v in old new; do
    case $v in old) bin=/tmp/old/build/exitrt  # old: a worktree of 4873614 (convs on OpenBLAS), RelWithDebInfo; env=;; new) bin=build/exitrt; env=;; new-openblas) bin=build/exitrt; env=ERT_CPU_GEMM=openblas;; esac
    for pol in none confidence:0.824603; do
      lim=$([ $b = 1 ] && echo 500 || echo 4096)
      r=$(env $env $bin eval --model models/fmnist-cnn --data fashion-mnist:test --policy $pol --batch $b --limit $lim 2>&1 | grep -E "batch latency|^accuracy|accuracy " | tr '\n' ' ')
      echo "rep$rep b$b $v $pol: $r"
    done
  done
done
done
