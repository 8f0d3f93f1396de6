#!/usr/bin/env bash
# The product code's format and static checks, as .ci/run runs them: clang-format (.clang-format) must have nothing
# to change, and clang-tidy (.clang-tidy: warnings are errors) must find nothing. Needs a configured build
# directory for compile_commands.json (default: build/, which tests/run.sh makes). Usage: .ci/lint.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
cd "$root"
dirs='tracer store capture correlate report cli'
mapfile -t files < <(git ls-files $(for d in $dirs; do echo "$d/*.cpp" "$d/*.hpp"; done))
echo "lint: clang-format on ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}"
echo "lint: clang-tidy on the product code (compile commands of $build)"
regex="$root/($(echo "$dirs" | tr ' ' '|'))/.*\\.cpp"
if ! run-clang-tidy -p "$build" -j "$(nproc)" -quiet "$regex" >"$build/clang-tidy.log" 2>&1; then
  sed 's/\x1b\[[0-9;]*m//g' "$build/clang-tidy.log" | grep -E "(error|warning):" | sort -u >&2 || tail -40 "$build/clang-tidy.log" >&2
  echo "lint: clang-tidy found the above (full log: $build/clang-tidy.log)" >&2
  exit 1
fi
echo "lint: clean"
