#!/usr/bin/env bash
# Installs what exitrt needs on Debian (if missing) and builds it into build/.
# The CUDA backend is built when nvcc is found (PATH or /usr/local/cuda), for sm_90.
# Environment: BUILD_DIR (default build), ERT_WERROR=ON to turn warnings into errors.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-matplotlib only draws the plots of `exitrt sweep --plot` / `loadtest --plot`.
packages=(build-essential cmake pkg-config libopenblas-dev libcjson-dev zlib1g-dev check dataset-fashion-mnist
          python3-matplotlib)
# Optional: libdnnl-dev (oneDNN 2.x or 3.x) runs the CPU backend's linear and conv ops; without it
# they run on OpenBLAS (CMake says which). Installed where apt knows it (Debian 12 and 13, Ubuntu 24.04).
optional=(libdnnl-dev)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "exitrt setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for p in "${optional[@]}"; do
  installed "$p" && continue
  if apt-cache show "$p" > /dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$p" > /dev/null 2>&1; then
    echo "exitrt setup: installed $p"
  else
    echo "exitrt setup: $p not available here (optional: the CPU linear and conv ops run on OpenBLAS)"
  fi
done

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

build=${BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DERT_WERROR="${ERT_WERROR:-OFF}" >/dev/null
cmake --build "$build" -j"$(nproc)"
