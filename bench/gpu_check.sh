#!/usr/bin/env bash
# The device check, one call on the GPU machine (see README "GPU check"):
#   build for sm_90 -> GPU tests -> compute-sanitizer (memcheck, racecheck, initcheck,
#   synccheck) -> the headline benchmark grid with the PyTorch peer -> micro-benchmarks
#   -> a short table last. Logs go to $OUT (the device tool brings them back).
# The device machine has CUDA, CMake and PyTorch but none of our Debian libraries and no
# network: they travel as .deb files in .deps/debs (bench/fetch_deps.sh fetches them) and
# are unpacked into .deps/root here, with the Fashion-MNIST test split in .deps/fmnist.
# Run from this machine with the device tool, carrying .deps:  bash bench/gpu_check.sh
# Budget: under 8 minutes on the H200.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ert-gpu-check}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/steps.log"; }
status=0
fail() { echo "FAILED: $*" | tee -a "$OUT/steps.log"; status=1; }

step "machine"
{ nvidia-smi; nvcc --version; cmake --version | head -1; python3 -c 'import torch; print("torch", torch.__version__)'; } \
  > "$OUT/machine.txt" 2>&1
head -20 "$OUT/machine.txt"

step "dependencies from .deps"
root=$PWD/.deps/root
mkdir -p "$root"
for f in .deps/debs/*.deb; do dpkg -x "$f" "$root"; done
libdir=$root/usr/lib/x86_64-linux-gnu
export CMAKE_PREFIX_PATH=$root/usr
export CMAKE_INCLUDE_PATH=$root/usr/include:$root/usr/include/x86_64-linux-gnu/openblas-pthread
export CMAKE_LIBRARY_PATH=$libdir:$libdir/openblas-pthread
# The .pc files of the unpacked packages name /usr: let CMake search the paths instead.
export PKG_CONFIG_LIBDIR=$root/no-pkgconfig
export LD_LIBRARY_PATH=$libdir:$libdir/openblas-pthread:${LD_LIBRARY_PATH:-}
export ERT_FASHION_MNIST_DIR=$PWD/.deps/fmnist
# zlib1g-dev's libz.so points at Debian's exact libz version; use the machine's own.
for z in /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1; do
  [ -e "$z" ] && ln -sf "$z" "$libdir/libz.so" && break
done

step "build (sm_90, warnings as errors)"
build=build-gpu
if ! cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DERT_CUDA=ON \
      -DERT_WERROR=ON -DERT_BENCH=ON > "$OUT/build.log" 2>&1 || ! cmake --build $build -j16 >> "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  fail "build"
  exit 1
fi

step "GPU tests"
(cd $build && ctest -R 'cuda' --output-on-failure -V --timeout 300) > "$OUT/gpu-tests.log" 2>&1 || fail "GPU tests"
grep -E "Passed|Failed|SKIP|agree|identical|Test #|max " "$OUT/gpu-tests.log" | head -40

step "CPU tests (same build)"
(cd $build && ctest -E 'cuda|fmnist|test_data' --output-on-failure --timeout 300) > "$OUT/cpu-tests.log" 2>&1 || fail "CPU tests"
tail -3 "$OUT/cpu-tests.log"

step "compute-sanitizer"
san_run=( "$build/exitrt" eval --model models/fmnist-mlp --data fashion-mnist:test --limit 300 --batch 64
          --device cuda:0 --policy confidence:0.9 --warmup 0 )
for tool in memcheck racecheck initcheck synccheck; do
  if timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 "${san_run[@]}" > "$OUT/sanitizer-$tool.log" 2>&1; then
    echo "compute-sanitizer $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1)"
  else
    fail "compute-sanitizer $tool (exit $?)"; tail -15 "$OUT/sanitizer-$tool.log"
  fi
done
ERT_COMPACT_PATH=cub timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "${san_run[@]}" \
  > "$OUT/sanitizer-memcheck-cub.log" 2>&1 || fail "compute-sanitizer memcheck (CUB compaction path)"
timeout 180 compute-sanitizer --tool memcheck --error-exitcode 9 "$build/test/test_cuda_ops" \
  > "$OUT/sanitizer-ops.log" 2>&1 || fail "compute-sanitizer memcheck on test_cuda_ops"
tail -2 "$OUT/sanitizer-ops.log"

step "profile of the shipped model on the GPU"
"$build/exitrt" eval --model models/fmnist-mlp --data fashion-mnist:test --device cuda:0 --batch 1024 \
  --policy confidence:0.9 --profile --trace "$OUT/trace.json" > "$OUT/profile.txt" 2>&1 || fail "eval --profile"
tail -12 "$OUT/profile.txt"

step "headline grid: exitrt"
"$build/exitrt" bench --device cuda:0 --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1 || fail "exitrt bench"
cat "$OUT/bench.txt"

step "headline grid: PyTorch peer"
PYTHONUNBUFFERED=1 timeout 240 python3 bench/peer_pytorch.py --device cuda --json "$OUT/peer.json" \
  > "$OUT/peer.txt" 2>&1 || fail "PyTorch peer"
cat "$OUT/peer.txt"

step "micro-benchmarks (decide, compact)"
if [ -x "$build/bench/ert_micro" ]; then
  timeout 120 "$build/bench/ert_micro" --benchmark_min_time=0.05 > "$OUT/micro.txt" 2>&1 || fail "micro-benchmarks"
  grep -E "cuda|Benchmark" "$OUT/micro.txt" | head -40
fi

step "done in $(( $(date +%s) - start ))s, status $status"
exit $status
