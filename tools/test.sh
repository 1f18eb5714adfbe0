#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs every test with ctest. GPU tests skip, with their
# reason printed, when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 "$@"
