#!/bin/bash
# side by side, alternating: old = a worktree of 34e5aec (the padded pool on the window
# loop), new = this tree (the padded plane copied into scratch); RelWithDebInfo, ERT_CUDA=OFF
cd /work/main
for rep in 1 2 3; do
for b in 16 256; do
  for v in old new; do
    case $v in old) bin=/tmp/wt-old/b/exitrt;; new) bin=build/exitrt;; esac
    for pol in none confidence:0.824603; do
      r=$($bin eval --model models/fmnist-cnn --data fashion-mnist:test --policy $pol --batch $b --limit 4096 2>&1 | grep -E "batch latency|^accuracy" | tr '\n' ' ')
      echo "rep$rep b$b $v $pol: $r"
    done
  done
done
done
