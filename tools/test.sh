#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs every test with ctest. GPU tests skip, with their
# reason printed below the summary, when there is no GPU. Then the CPU backend's tests
# run again under AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer (with
# float-to-integer overflow, which test_fuzz's edge values reach), in
# build-sanitize/ (all but test_fmnist, whose 10,000-image runs take minutes under ASan),
# and test_loadtest (the threaded load tester) under ThreadSanitizer in build-tsan/.
# ERT_SANITIZE=0 skips both passes. Arguments go to the first ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
root=$PWD
cd "${BUILD_DIR:-build}"
status=0
ctest --output-on-failure --timeout 600 "$@" || status=$?
# ctest hides the output of skipped tests: show why each one skipped.
grep -h "^SKIP" Testing/Temporary/LastTest.log 2>/dev/null | sort -u | sed 's/^/skipped: /' || true

# A CPU-only Debug build with FLAGS (compiler and linker) in DIR; TARGETS or everything.
sanitized_build() {
  local dir=$1 flags=$2
  shift 2
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DERT_CUDA=OFF -DERT_BENCH=OFF \
    -DERT_WERROR="${ERT_WERROR:-OFF}" -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DCMAKE_SHARED_LINKER_FLAGS="$flags" >/dev/null
  cmake --build "$dir" -j"$(nproc)" ${1:+--target "$@"} >/dev/null
}

# Older sanitizer runtimes (this GCC's) hang or fail to map their shadow memory when the
# kernel randomises mmap over 32 bits (vm.mmap_rnd_bits = 32, e.g. Ubuntu 24.04 hosts):
# the sanitized tests run without ASLR where the machine allows it (setarch -R; its
# personality is inherited by every process the tests start).
# Where ASLR cannot be turned off (a container's seccomp) on such a kernel, the passes are
# skipped, with the reason, rather than left to hang.
norand=()
sanitize=${ERT_SANITIZE:-1}
if command -v setarch > /dev/null && setarch "$(uname -m)" -R true 2> /dev/null; then
  norand=(setarch "$(uname -m)" -R)
elif [ "$sanitize" != 0 ] && [ "$(cat /proc/sys/vm/mmap_rnd_bits 2> /dev/null || echo 28)" -gt 28 ]; then
  echo "== sanitizer passes skipped: vm.mmap_rnd_bits > 28 and ASLR cannot be turned off here (setarch -R)"
  sanitize=0
fi

if [ "$sanitize" != 0 ]; then
  echo "== the CPU tests again under AddressSanitizer and UndefinedBehaviorSanitizer"
  sanitized_build "$root/build-sanitize" \
    "-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
  (cd "$root/build-sanitize" &&
    ASAN_OPTIONS=detect_leaks=1 "${norand[@]}" ctest --output-on-failure --timeout 600 -E 'fmnist|cuda') || status=$?

  # The load tester is the one module with threads of its own (a worker per stream): its
  # tests again under ThreadSanitizer, which fails them on any data race. The CPU ops run
  # on one thread here (ERT_CPU_THREADS=1): libgomp, their threads, is not built for TSan,
  # which then cannot see its barriers. That the ops' tasks share nothing is checked by
  # test_conv and test_fmnist (the same bits on any thread count).
  echo "== test_loadtest under ThreadSanitizer"
  sanitized_build "$root/build-tsan" "-fsanitize=thread -fno-omit-frame-pointer" exitrt_cli test_loadtest
  tlog=$root/build-tsan/tsan.log
  if ! (cd "$root/build-tsan" && ERT_CPU_THREADS=1 TSAN_OPTIONS=halt_on_error=1 "${norand[@]}" \
    ctest --output-on-failure --timeout 600 -R test_loadtest) \
    > "$tlog" 2>&1; then
    # a runtime that cannot map its shadow memory is the machine, not a race
    if grep -q "ThreadSanitizer: unexpected memory mapping" "$tlog"; then
      echo "ThreadSanitizer cannot start on this kernel (vm.mmap_rnd_bits); the TSan pass is skipped" >> "$tlog"
    else
      status=1
    fi
  fi
  cat "$tlog"
fi
exit $status
