#!/usr/bin/env bash
# check.sh BINARY: makes the outputs again with BINARY (make.sh) and compares them byte for byte with the ones
# stored here (the .gz ones decompressed). Exit 0 when all are the same, 1 otherwise (naming each that differs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# -eq 1 && -x $1 ]] || { echo "usage: $0 BINARY" >&2; exit 2; }
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$here/make.sh" "$1" "$fresh"

content() { if [[ $1 == *.gz ]]; then gzip -dc "$1"; else cat "$1"; fi; }
failed=0
compared=0
for stored in "$here"/*.json "$here"/*.txt "$here"/*.csv "$here"/*.gz; do
    name=$(basename "$stored")
    compared=$((compared + 1))
    if [[ ! -e $fresh/$name ]]; then
        echo "MISSING $name: stored, but $1 no longer makes it"
        failed=1
    elif ! cmp -s <(content "$stored") <(content "$fresh/$name"); then
        echo "DIFFERS $name:"
        diff <(content "$stored") <(content "$fresh/$name") | head -20 || true
        failed=1
    fi
done
for made in "$fresh"/*; do
    name=$(basename "$made")
    [[ -e $here/$name ]] || { echo "NEW $name: made, but not stored (run make.sh)"; failed=1; }
done
echo "$compared outputs compared: $([[ $failed -eq 0 ]] && echo "all identical" || echo "some differ")"
exit "$failed"
