#!/usr/bin/env bash
# The CPU backend built and tested against oneDNN 3 (Debian 13 ships 3.7, Ubuntu 24.04
# 3.1; this machine's Debian 12, 2.6, is what tools/test.sh builds against). oneDNN 3 comes
# from PyPI (onednn-cpu-gomp, oneDNN 3.2 with GNU OpenMP, as Debian builds it: a manylinux
# wheel, so it loads on Debian 12), fetched once into $dir/wheels. The CPU linear and conv
# ops' tests run there, and the program must say it runs on oneDNN. .ci/run calls it.
# Environment: ONEDNN3_DIR (default build-onednn3), ERT_WERROR=ON for warnings as errors.
# A failed download (no registry) skips the pass, saying so; anything else fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${ONEDNN3_DIR:-build-onednn3}
ver=2023.2.0 # the package's version: oneDNN 3.2
mkdir -p "$dir/wheels"
if ! ls "$dir"/wheels/onednn_cpu_gomp-$ver-*.whl "$dir"/wheels/onednn_devel_cpu_gomp-$ver-*.whl > /dev/null 2>&1; then
  if ! python3 -m pip download -q --no-deps -d "$dir/wheels" "onednn-cpu-gomp==$ver" "onednn-devel-cpu-gomp==$ver"; then
    echo "== oneDNN 3 pass skipped: the wheels could not be downloaded (python3 -m pip download, PyPI)"
    exit 0
  fi
fi
rm -rf "$dir/onednn"
for w in "$dir"/wheels/onednn_cpu_gomp-$ver-*.whl "$dir"/wheels/onednn_devel_cpu_gomp-$ver-*.whl; do
  python3 -m zipfile -e "$w" "$dir/onednn"
done
data=$(echo "$dir"/onednn/onednn_cpu_gomp-$ver.data/data)
devel=$(echo "$dir"/onednn/onednn_devel_cpu_gomp-$ver.data/data)
cmake -S . -B "$dir/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DERT_CUDA=OFF -DERT_BENCH=OFF -DERT_ONEDNN=ON \
  -DERT_WERROR="${ERT_WERROR:-OFF}" -DONEDNN_INCLUDE_DIR="$root/$devel/include" \
  -DONEDNN_LIBRARY="$root/$data/lib/libdnnl.so.3" > "$dir/configure.log"
grep "exitrt: oneDNN" "$dir/configure.log"
cmake --build "$dir/build" -j"$(nproc)" > "$dir/build.log" || { tail -30 "$dir/build.log"; exit 1; }
# the library the program runs on (the device's name says which)
device=$("$dir/build/exitrt" eval --model models/fmnist-mlp --data fashion-mnist:test --limit 256 --policy none |
  grep -o "device [^|]*")
echo "fmnist-mlp: $device"
case $device in *oneDNN*) ;; *) echo "oneDNN 3 pass: the program does not run on oneDNN"; exit 1 ;; esac
(cd "$dir/build" && ctest --output-on-failure --timeout 600 -R 'test_conv|test_ops|test_session|test_exec|test_cli')
