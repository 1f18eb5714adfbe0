#!/usr/bin/env bash
# Fills .deps/ (git-ignored) with what bench/gpu_check.sh needs on the device machine,
# which has no network and none of our Debian libraries: the .deb files of our build
# dependencies and the Fashion-MNIST test split. Run here (Debian, with apt) before the
# device call; the call carries .deps.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs .deps/fmnist
(cd .deps/debs && apt-get download libcjson1 libcjson-dev libopenblas0-pthread libopenblas-pthread-dev \
   libopenblas-dev libgfortran5 libquadmath0 check libsubunit0 libsubunit-dev libbenchmark1debian \
   libbenchmark-dev zlib1g-dev libdnnl2 libdnnl-dev ocl-icd-libopencl1)
cp /usr/share/datasets/fashion-mnist/t10k-* .deps/fmnist/
du -sh .deps
