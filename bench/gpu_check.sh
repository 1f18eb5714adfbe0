#!/usr/bin/env bash
# The device check, one call on the GPU machine:
#   build for sm_90 -> GPU tests (eager and graph mode against the CPU and each other)
#   -> headline grid (exitrt bench: eager and graph variants, graph targets) beside the
#   PyTorch peer -> profiles of the shipped models (eager, graph) -> the graphs of the
#   D=1024, B=64 point as DOT files (dot.tgz: their node counts) -> compute-sanitizer
#   (memcheck, racecheck, initcheck, synccheck; eager and graph) -> a sweep of both shipped
#   models on cuda:0 -> micro-benchmarks -> the grid's large points again with in-place
#   fill compaction -> load-test peaks (eager, graph) -> the shipped models beside PyTorch
#   (bench/peer_models.py) -> a short table last. Logs go to $OUT.
# The device machine has CUDA, CMake, Ninja and PyTorch but none of our Debian libraries
# and no network: they travel as .deb files in .deps/debs (bench/fetch_deps.sh fetches
# them) and are unpacked into .deps/root here; the Fashion-MNIST test split is in
# .deps/fmnist. Run with the device tool, carrying .deps:  bash bench/gpu_check.sh
# Every step checks the time left (ERT_CHECK_BUDGET seconds, default 420) and is skipped,
# saying so, when it would not fit.
# Rehearsal without a GPU (catches a wrong flag or path before device time is spent):
#   ERT_CHECK_DEVICE=cpu bash bench/gpu_check.sh   (with .deps filled by bench/fetch_deps.sh)
# runs every exitrt, PyTorch and summary step on the cpu, on small sizes (added options
# that override the GPU's), builds without CUDA and skips the GPU tests and
# compute-sanitizer (and the PyTorch peer where torch is missing), saying so. Its figures
# mean nothing. CI (.ci/run) runs it, so the script cannot rot between device runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ert-gpu-check}
mkdir -p "$OUT"
start=$(date +%s)
budget=${ERT_CHECK_BUDGET:-420}
status=0
dev=${ERT_CHECK_DEVICE:-cuda:0}
rehearse=0; [ "$dev" = cpu ] && rehearse=1
# Options appended in a rehearsal only (a later option wins): small sizes for the cpu.
small_bench=(); small_sweep=(); small_load=(); small_peer=(); peer_dev=cuda; cuda_build=ON; micro_filter=cuda
if [ $rehearse = 1 ]; then
  small_bench=(--widths 64 --batches 16,40 --depth 4 --reps 2 --warmup 1 --exec both)
  small_sweep=(--limit 512); small_load=(--requests 4000); small_peer=(--limit 512 --rounds 1); peer_dev=cpu; cuda_build=OFF; micro_filter=cpu
  echo "REHEARSAL on the cpu: small sizes, no CUDA; the figures mean nothing" | tee -a "$OUT/steps.log"
fi
left() { echo $(( budget - ($(date +%s) - start) )); }
step() { echo "== [$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/steps.log"; }
fail() { echo "FAILED: $*" | tee -a "$OUT/steps.log"; status=1; }
# fits SECONDS: is there time for a step that needs about that long?
fits() { [ "$(left)" -ge "$1" ] || { echo "SKIPPED (time): $2" | tee -a "$OUT/steps.log"; return 1; }; }

step "machine"
{ nvidia-smi; nvcc --version; cmake --version | head -1; git log -1 --format='commit %H %s' 2>/dev/null;
  python3 -c 'import torch; print("torch", torch.__version__)'; } > "$OUT/machine.txt" 2>&1
grep -E "H200|Driver|release|commit|torch" "$OUT/machine.txt" | head -6

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
# oneDNN (the CPU linear ops) only if Debian's library loads here (its libstdc++ and
# libgomp are the machine's): else its header goes, and CMake builds the OpenBLAS path.
if [ -e "$libdir/libdnnl.so.2" ] && ! python3 -c "import ctypes; ctypes.CDLL('$libdir/libdnnl.so.2')" 2> "$OUT/onednn.log"; then
  echo "oneDNN does not load here (onednn.log): the CPU linear ops build on OpenBLAS" | tee -a "$OUT/steps.log"
  rm -rf "$root/usr/include/oneapi"
fi
# zlib1g-dev's libz.so points at Debian's exact libz version; use the machine's own.
for z in /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1; do
  [ -e "$z" ] && ln -sf "$z" "$libdir/libz.so" && break
done

# cuDNN is not in the machine's CUDA toolkit but in PyTorch's pip package (nvidia-cudnn-cu13):
# the folder under site-packages/nvidia that holds lib/libcudnn.so.9 and include/cudnn.h
# (nvidia/cudnn in the cu12 wheels; the cu13 layout has not been seen here, so any depth).
cudnn_root=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in sorted(glob.glob(os.path.join(sp, "nvidia", "**", "lib", "libcudnn.so.9"), recursive=True)):
        root = os.path.dirname(os.path.dirname(lib))
        if os.path.isfile(os.path.join(root, "include", "cudnn.h")):
            print(root)
            raise SystemExit
PY
)
if [ -n "$cudnn_root" ]; then
  export LD_LIBRARY_PATH=$cudnn_root/lib:$LD_LIBRARY_PATH
  [ -e "$cudnn_root/lib/libcudnn.so" ] || ln -sf libcudnn.so.9 "$cudnn_root/lib/libcudnn.so" 2>/dev/null || true
fi
echo "cuDNN from: ${cudnn_root:-not found}"

step "build (sm_90, warnings as errors)"
build=build-gpu
rm -rf $build
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DERT_CUDA=$cuda_build \
  -DERT_WERROR=ON -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON ${cudnn_root:+-DCUDNN_ROOT=$cudnn_root} > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; fail "configure"; exit 1; }
# -k 0: a failing micro-benchmark build must not stop the tests.
cmake --build $build -j16 -- -k 0 >> "$OUT/build.log" 2>&1 || fail "build (see build.log)"
grep -E "error|warning" "$OUT/build.log" | head -20
grep -E "exitrt: (oneDNN|cuDNN)" "$OUT/build.log"
[ -x $build/exitrt ] && { [ $rehearse = 1 ] || [ -x $build/test/test_cuda_session ]; } || { tail -30 "$OUT/build.log"; exit 1; }
"$build/exitrt" --version | tee -a "$OUT/machine.txt" # the libraries as loaded: driver, cuBLASLt, cuDNN, oneDNN

if [ $rehearse = 1 ]; then echo "SKIPPED (rehearsal on the cpu): GPU tests" | tee -a "$OUT/steps.log"; else
step "GPU tests"
# ERT_REQUIRE_CUDA=1: a device (and cuDNN) is due here, so "no device" fails instead of skipping.
(cd $build && ERT_REQUIRE_CUDA=1 ctest -R 'cuda' --output-on-failure -V --timeout 240) > "$OUT/gpu-tests.log" 2>&1 \
  || fail "GPU tests"
grep -E "Test +#|SKIP|FAIL|agree|identical|borderline|Checks|Failure|Error|refused|graph" "$OUT/gpu-tests.log" | head -40
fi

if fits 150 "CPU tests"; then
  step "CPU tests (same build)"
  (cd $build && ctest -E 'cuda|fmnist|test_data' --output-on-failure --timeout 120) > "$OUT/cpu-tests.log" 2>&1 \
    || { fail "CPU tests"; grep -E "Failed|Assertion|Error" "$OUT/cpu-tests.log" | head -10; }
  grep -E "tests passed|Failed" "$OUT/cpu-tests.log"
fi

if fits 120 "exitrt bench"; then
  step "headline grid: exitrt"
  timeout $(( $(left) - 60 )) "$build/exitrt" bench --device $dev --reps 30 --warmup 5 --json "$OUT/bench.json" "${small_bench[@]}" \
    > "$OUT/bench.txt" 2>&1 || fail "exitrt bench"
  cat "$OUT/bench.txt"
  # A graph that fails (capture, launch) stops the whole bench: keep at least the eager grid.
  if [ ! -s "$OUT/bench.json" ] && fits 90 "exitrt bench, eager only"; then
    step "headline grid: exitrt, eager only (the run with graph variants failed)"
    timeout $(( $(left) - 60 )) "$build/exitrt" bench --device $dev --reps 30 --warmup 5 --exec eager "${small_bench[@]}" \
      --json "$OUT/bench.json" > "$OUT/bench-eager.txt" 2>&1 || fail "exitrt bench --exec eager"
    tail -12 "$OUT/bench-eager.txt"
  fi
fi

if [ $rehearse = 1 ] && ! python3 -c 'import torch' 2> /dev/null; then
  echo "SKIPPED (rehearsal, no PyTorch here): PyTorch peer" | tee -a "$OUT/steps.log"
elif fits 90 "PyTorch peer"; then
  step "headline grid: PyTorch peer"
  PYTHONUNBUFFERED=1 timeout $(( $(left) - 50 )) python3 bench/peer_pytorch.py --device $peer_dev --reps 30 \
    --json "$OUT/peer.json" > "$OUT/peer.txt" 2>&1 || fail "PyTorch peer"
  cat "$OUT/peer.txt"
fi

if fits 40 "profile"; then
  step "profile of the shipped model"
  timeout 30 "$build/exitrt" eval --model models/fmnist-mlp --data fashion-mnist:test --device $dev --batch 1024 \
    --policy confidence:0.9 --profile --trace "$OUT/trace.json" > "$OUT/profile.txt" 2>&1 || fail "eval --profile"
  tail -11 "$OUT/profile.txt"
fi
if fits 40 "profile, graph mode"; then
  step "profile of the shipped models, graph mode"
  for m in fmnist-mlp fmnist-cnn; do
    timeout 30 "$build/exitrt" eval --model models/$m --data fashion-mnist:test --device $dev --batch 1024 \
      --policy confidence:0.9 --exec graph --profile > "$OUT/profile-graph-$m.txt" 2>&1 || fail "eval --exec graph ($m)"
    head -3 "$OUT/profile-graph-$m.txt"; tail -2 "$OUT/profile-graph-$m.txt"
  done
fi

if fits 40 "graph structure"; then
  step "graph structure at D=1024, B=64 (ERT_CUDA_GRAPH_DOT: one DOT file per captured graph)"
  mkdir -p "$OUT/dot"
  ERT_CUDA_GRAPH_DOT="$OUT/dot/bench-1024-64" timeout 35 "$build/exitrt" bench --device $dev --widths 1024 \
    --batches 64 --reps 3 --warmup 1 --exec graph > "$OUT/dot/bench.txt" 2>&1 || fail "bench with graph DOT files"
  for f in "$OUT"/dot/bench-1024-64.*; do
    [ -e "$f" ] && echo "$(basename "$f"): $(grep -c -- '->' "$f") edges, $(wc -c < "$f") bytes"
  done
fi

step "compute-sanitizer"
[ $rehearse = 1 ] && echo "SKIPPED (rehearsal on the cpu): compute-sanitizer" | tee -a "$OUT/steps.log"
san=( "$build/exitrt" eval --model models/fmnist-mlp --data fashion-mnist:test --limit 128 --batch 64
      --device $dev --policy confidence:0.9 --warmup 0 )
for tool in memcheck racecheck initcheck synccheck; do
  [ $rehearse = 1 ] && break
  fits 45 "compute-sanitizer $tool" || continue
  if timeout 40 compute-sanitizer --tool $tool --error-exitcode 9 "${san[@]}" > "$OUT/san-$tool.log" 2>&1; then
    echo "compute-sanitizer $tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san-$tool.log" | tail -1)"
  else
    fail "compute-sanitizer $tool (exit $?)"; grep -E "=====" "$OUT/san-$tool.log" | head -8
  fi
done
for tool in memcheck racecheck synccheck; do
  [ $rehearse = 1 ] && break
  fits 45 "compute-sanitizer $tool, graph mode" || continue
  if timeout 40 compute-sanitizer --tool $tool --error-exitcode 9 "${san[@]}" --exec graph > "$OUT/san-graph-$tool.log" 2>&1; then
    echo "compute-sanitizer $tool (graph): $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san-graph-$tool.log" | tail -1)"
  else
    fail "compute-sanitizer $tool, graph mode (exit $?)"; grep -E "=====" "$OUT/san-graph-$tool.log" | head -8
  fi
done
if [ $rehearse = 0 ] && fits 45 "compute-sanitizer memcheck, fill compaction"; then
  timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 "${san[@]}" --compaction fill --exec graph \
    > "$OUT/san-memcheck-fill.log" 2>&1 && echo "memcheck (fill, graph): $(grep 'ERROR SUMMARY' "$OUT/san-memcheck-fill.log")" \
    || fail "compute-sanitizer memcheck (fill compaction, graph mode)"
fi
if [ $rehearse = 0 ] && fits 45 "compute-sanitizer memcheck, CUB path"; then
  ERT_COMPACT_PATH=cub timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 "${san[@]}" \
    > "$OUT/san-memcheck-cub.log" 2>&1 && echo "memcheck (CUB compaction): $(grep 'ERROR SUMMARY' "$OUT/san-memcheck-cub.log")" \
    || fail "compute-sanitizer memcheck (CUB compaction path)"
fi

if fits 90 "sweep on cuda:0"; then
  step "policy sweep of both shipped models on cuda:0 (issue 6)"
  for m in fmnist-mlp fmnist-cnn; do
    timeout 40 "$build/exitrt" sweep --model models/$m --data fashion-mnist:test --device $dev --grid 4 \
      --out "$OUT/sweep-$m" "${small_sweep[@]}" > "$OUT/sweep-$m.txt" 2>&1 || fail "sweep $m on cuda:0"
    tail -14 "$OUT/sweep-$m.txt"
  done
fi

if [ -x "$build/bench/ert_micro" ] && fits 50 "micro-benchmarks"; then
  step "micro-benchmarks (decide, compact, linear, conv)"
  timeout 45 "$build/bench/ert_micro" --benchmark_filter=$micro_filter --benchmark_min_time=0.02 > "$OUT/micro.txt" 2>&1 \
    || fail "micro-benchmarks"
  grep -E "^BM|^[a-z_-]+/" "$OUT/micro.txt" | head -45
fi

if fits 75 "exitrt bench, fill compaction"; then
  step "headline grid at D=4096, B>=1024 with fill compaction (in place; NOTES.md has the prediction)"
  timeout $(( $(left) - 30 )) "$build/exitrt" bench --device $dev --widths 4096 --batches 1024,8192 --reps 20 \
    --warmup 3 --compaction fill --json "$OUT/bench-fill.json" "${small_bench[@]}" > "$OUT/bench-fill.txt" 2>&1 \
    || fail "bench, fill"
  tail -8 "$OUT/bench-fill.txt"
fi

if fits 100 "load test peaks"; then
  step "load test: peak qps at p99 <= 5 ms, eager and graph (bench/NOTES.md, load test on the H200)"
  # 60,000 requests: trials may test rates up to 600k qps (their arrivals must span 20 x
  # 5 ms; the 2026-11-28 run's fixed:0 trials spanned fewer: NOTES.md, "Peak search:
  # trials too short"), and a trial at 100k qps takes 0.6 s. Eager first, the earlier
  # run's configuration; then graph mode. A timeout keeps the trials printed so far.
  for ex in eager graph; do
    fits 45 "load test peaks, $ex" || continue
    timeout $(( $(left) > 100 ? 90 : $(left) - 10 )) "$build/exitrt" loadtest -m models/fmnist-mlp -d fashion-mnist:test \
      --device $dev --exec $ex --find-peak --slo-ms 5 -p none -p confidence:0.9 -p fixed:0 --requests 60000 \
      "${small_load[@]}" \
      > "$OUT/peak-$ex.txt" 2>&1 || fail "loadtest peaks ($ex)"
    tail -6 "$OUT/peak-$ex.txt"
  done
fi

if [ $rehearse = 1 ] && ! python3 -c 'import torch' 2> /dev/null; then
  echo "SKIPPED (rehearsal, no PyTorch here): the shipped models beside PyTorch" | tee -a "$OUT/steps.log"
elif fits 90 "the shipped models beside PyTorch"; then
  step "the shipped models beside PyTorch eager (f32, the README's operating points; NOTES.md has the CPU run)"
  PYTHONUNBUFFERED=1 timeout $(( $(left) - 20 )) python3 bench/peer_models.py --device $dev --exitrt "$build/exitrt" \
    --rounds 2 --json "$OUT/peer-models.json" "${small_peer[@]}" > "$OUT/peer-models.txt" 2>&1 \
    || fail "the shipped models beside PyTorch"
  tail -9 "$OUT/peer-models.txt"
fi

step "summary"
python3 - "$OUT" <<'PY' || true
import json, os, sys
out = sys.argv[1]
try:
    fill = json.load(open(os.path.join(out, "bench-fill.json")))
    print(f"fill compaction: {'D':>5} {'B':>5} {'exec':>5} {'compact':>8} {'of_ideal':>8} {'routing':>8}")
    for r in fill.get("points", []):
        for ex, c, g in (("eager", "compact", r), ("graph", "compact-graph", r.get("graph"))):
            if g and c in r:
                print(f"                 {r['width']:>5} {r['batch']:>5} {ex:>5} {r[c]['median_ms']:>8.3f} "
                      f"{g['of_ideal']:>8.2f} {100*g['routing_share']:>7.1f}%")
    print()
except Exception as e:
    print("no fill bench:", e)
try:
    b = json.load(open(os.path.join(out, "bench.json")))
except Exception as e:
    print("no bench.json:", e); sys.exit(0)
try:
    p = {(r["width"], r["batch"]): r for r in json.load(open(os.path.join(out, "peer.json")))["points"]}
except Exception:
    p = {}
print(f"{'D':>5} {'B':>5} {'full':>8} {'compact':>8} {'ideal':>8} {'speedup':>8} {'of_ideal':>8} {'routing':>8} {'idle':>6} {'peer cmp/full':>13}")
for r in b.get("points", []):
    q = p.get((r["width"], r["batch"]))
    peer = f"{q['full']['median_ms'] / q['compact']['median_ms']:.2f}x" if q else "-"
    print(f"{r['width']:>5} {r['batch']:>5} {r['full']['median_ms']:>8.3f} {r['compact']['median_ms']:>8.3f} "
          f"{r['ideal']['median_ms']:>8.3f} {r['speedup']:>7.2f}x {r['of_ideal']:>8.2f} "
          f"{100*r['routing_share']:>7.1f}% {100*r['sync_share']:>5.1f}% {peer:>13}")
print(f"\ngraph mode: {'D':>5} {'B':>5} {'full-g':>8} {'compact-g':>9} {'ideal-g':>8} {'speedup':>8} {'of_ideal':>8} {'routing':>8} {'pad':>6} {'syncs':>5} {'ev_ms':>6}")
for r in b.get("points", []):
    g = r.get("graph")
    if not g: continue
    print(f"            {r['width']:>5} {r['batch']:>5} {r['full-graph']['median_ms']:>8.3f} {r['compact-graph']['median_ms']:>9.3f} "
          f"{r['ideal-graph']['median_ms']:>8.3f} {g['speedup']:>7.2f}x {g['of_ideal']:>8.2f} {100*g['routing_share']:>7.1f}% "
          f"{100*g['padding_waste']:>5.1f}% {g['host_syncs']:>5} {g['stage_event_overhead_ms']:>6.3f}")
PY
step "done in $(( $(date +%s) - start ))s, status $status"
# The device tool brings back at most 8 files: every log goes into one archive too; the
# DOT files (possibly large) into their own, so that a size limit loses only them.
(cd "$OUT" && { [ -d dot ] && tar czf dot.tgz dot && rm -rf dot; true; } \
  && tar czf all-logs.tgz --exclude=all-logs.tgz --exclude=dot.tgz --exclude=console.log -- * \
  && find . -maxdepth 1 -type f ! -name all-logs.tgz ! -name console.log ! -name bench.json ! -name peer.json \
       ! -name gpu-tests.log ! -name micro.txt ! -name dot.tgz -delete)
exit $status
