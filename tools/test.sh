#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs every test with ctest. GPU tests skip, with their
# reason printed below the summary, when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cd "${BUILD_DIR:-build}"
status=0
ctest --output-on-failure --timeout 600 "$@" || status=$?
# ctest hides the output of skipped tests: show why each one skipped.
grep -h "^SKIP" Testing/Temporary/LastTest.log 2>/dev/null | sort -u | sed 's/^/skipped: /' || true
exit $status
