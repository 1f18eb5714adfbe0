#!/usr/bin/env bash
# Fills .deps/ (git-ignored) with what bench/gpu_check.sh needs on the device machine,
# which has no network and none of our Debian libraries: the .deb files of our build
# dependencies and the Fashion-MNIST test split. Run here (Debian, with apt) before the
# device call; the call carries .deps.
set -euo pipefail
cd "$(dirname "$0")/.."
# .deps/root is what a rehearsal (ERT_CHECK_DEVICE=cpu bash bench/gpu_check.sh) unpacked
# here: ~140 MB, which would push the carried tree past the device tool's 64 MiB. The
# device unpacks its own.
rm -rf .deps/root
mkdir -p .deps/debs .deps/fmnist
(cd .deps/debs && apt-get download libcjson1 libcjson-dev libopenblas0-pthread libopenblas-pthread-dev \
   libopenblas-dev libgfortran5 libquadmath0 check libsubunit0 libsubunit-dev libbenchmark1debian \
   libbenchmark-dev zlib1g-dev libdnnl2 libdnnl-dev ocl-icd-libopencl1)
cp /usr/share/datasets/fashion-mnist/t10k-* .deps/fmnist/
# The device call sends the working tree (tracked files, and untracked ones git does not
# ignore) plus .deps: at most 64 MiB together (du skips a tracked file deleted here).
tracked=$(git ls-files -z --cached --others --exclude-standard | { du -cb --files0-from=- 2>/dev/null || true; } \
  | tail -1 | cut -f1)
deps=$(du -sb .deps | cut -f1)
echo "to carry: working tree $((tracked >> 20)) MiB + .deps $((deps >> 20)) MiB (limit 64 MiB)"
if [ $((tracked + deps)) -gt $((64 << 20)) ]; then
  echo "fetch_deps.sh: the tree and .deps together exceed the device tool's 64 MiB" >&2; exit 1
fi
