#!/usr/bin/env bash
# Installs what exitrt needs on Debian (if missing) and builds it into build/.
# The CUDA backend is built when nvcc is found (PATH or /usr/local/cuda), for sm_90.
# Environment: BUILD_DIR (default build), ERT_WERROR=ON to turn warnings into errors.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-matplotlib only draws the plots of `exitrt sweep --plot` / `loadtest --plot`;
# libdnnl-dev (oneDNN 2.x) runs the CPU backend's linear ops (without it: OpenBLAS).
packages=(build-essential cmake pkg-config libopenblas-dev libdnnl-dev libcjson-dev zlib1g-dev check
          dataset-fashion-mnist python3-matplotlib)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "exitrt setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DERT_WERROR="${ERT_WERROR:-OFF}" >/dev/null
cmake --build "$build" -j"$(nproc)"
