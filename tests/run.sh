#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds (CI build type: warnings are errors), runs ctest.
# Namespace tests need root; with HOPTRACE_REQUIRE_NETNS=1 a skipped namespace test is a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${HOPTRACE_BUILD_DIR:-$root/build}
"$root/examples/install-deps.sh"
# shellcheck disable=SC2086  # HOPTRACE_CMAKE_ARGS is a list of extra -D options
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="${HOPTRACE_BUILD_TYPE:-CI}" ${HOPTRACE_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
