#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for SECONDS (default 90) from the corpus kept in
# fuzz/corpus/, on a copy of it (the kept corpus changes only when someone merges new inputs in on purpose, see
# fuzz/README.md). Fails on the first finding: a crash, a sanitizer report, a leak, a timeout or an out-of-memory,
# with the reproducer left in $HOPTRACE_FUZZ_ARTIFACTS (default build-fuzz/artifacts/). Used by .ci/run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-90}
build=${HOPTRACE_FUZZ_BUILD_DIR:-$root/build-fuzz}
artifacts=${HOPTRACE_FUZZ_ARTIFACTS:-$build/artifacts}
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug -DHOPTRACE_FUZZ=ON \
  -DHOPTRACE_TESTS=OFF -DHOPTRACE_BENCH=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target dissect_fuzz capture_file_fuzz
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in dissect_fuzz:dissect:4096 capture_file_fuzz:capture_file:16384; do
  IFS=: read -r fuzzer corpus max_len <<<"$target"
  cp -r "$root/fuzz/corpus/$corpus" "$work/$corpus"
  echo "fuzz: $fuzzer for ${seconds}s from fuzz/corpus/$corpus ($(ls "$work/$corpus" | wc -l) inputs)"
  if ! "$build/fuzz/$fuzzer" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/$fuzzer-" "$work/$corpus" >"$work/$fuzzer.log" 2>&1; then
    echo "fuzz: $fuzzer FOUND A PROBLEM (reproducer in $artifacts/):" >&2
    grep -E "ERROR|SUMMARY|Test unit written|runtime error" "$work/$fuzzer.log" | head -20 >&2 || tail -30 "$work/$fuzzer.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$work/$fuzzer.log" | tr '\n' ' '
    grep -oE "cov: [0-9]+ ft: [0-9]+" "$work/$fuzzer.log" | tail -1
  fi
done
exit $status
