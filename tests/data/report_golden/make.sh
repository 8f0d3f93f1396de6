#!/usr/bin/env bash
# make.sh BINARY [OUT_DIR]: imports every capture set of tests/data with BINARY and writes what its reports and
# its export make of each into OUT_DIR (default: this directory). See README.md: what these are, when to run it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data=$(cd "$here/.." && pwd)
[[ $# -ge 1 && -x $1 ]] || { echo "usage: $0 BINARY [OUT_DIR]" >&2; exit 2; }
binary=$(realpath "$1")
out=$(realpath -m "${2:-$here}")
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The outputs name the database and the import's command line (HTML header and footer, the pcapng section's
# comment, meta last_import), and the points name their files: run with the same relative names every time, as
# "hoptrace", in a directory of our own.
mkdir -p "$work/bin" "$work/run"
ln -s "$binary" "$work/bin/hoptrace"
export PATH="$work/bin:$PATH" TZ=UTC LC_ALL=C
cp -r "$data/lab" "$data/c2c" "$data/gso" "$data/tracer" "$work/run/"
cp "$data/live/lab-trace.db" "$work/run/live.db"
cd "$work/run"

# render NAME FLOW-EXPR: NAME.db is imported; every format, with and without --flow, and the export.
render() {
    local name=$1 flow=$2
    for format in json text csv html; do
        local ext=$format
        [[ $format == text ]] && ext=txt
        hoptrace report --db "$name.db" --format "$format" -o "$name.$ext"
        hoptrace report --db "$name.db" --format "$format" --flow "$flow" -o "$name.flow.$ext"
    done
    hoptrace export --db "$name.db" -o "$name.pcapng" >/dev/null
    hoptrace export --db "$name.db" -o "$name.flow.pcapng" --flow "$flow" >/dev/null
    # The pages and captures are the large ones: kept compressed (no name or time in the gzip header).
    gzip -n -9 -f "$name.html" "$name.flow.html" "$name.pcapng" "$name.flow.pcapng"
    cp "$name".*.* "$name.json" "$name.txt" "$name.csv" "$out/"
}

# import NAME SPEC...: a new database NAME.db of the files SPEC (NAME=FILE); an import that fails on a bad file
# keeps what it read (exit 1): that is rendered too.
import() {
    local name=$1
    shift
    rm -f "$name.db"
    hoptrace import --db "$name.db" "$@" 2>/dev/null || [[ $? -eq 1 ]]
}

# specs DIR NAME...: NAME=DIR/NAME.pcap for each NAME.
specs() {
    local dir=$1
    shift
    for n in "$@"; do printf '%s=%s/%s.pcap\n' "$n" "$dir" "$n"; done
}

# The multi-point sets: every point of a path, as tests/e2e/import_lab.py and tests/unit/correlate import them.
mapfile -t lab < <(specs lab c1-eth0 c1-veth c2-eth0 c2-veth docker0 uplink)
import lab "${lab[@]}" && render lab "proto udp"
mapfile -t server < <(specs lab c1-eth0 c1-veth c2-eth0 c2-veth docker0 uplink server-eth0)
import lab-server "${server[@]}" && render lab-server "host 172.17.0.3"
import lab-any c1-eth0=lab/c1-eth0.pcap c2-eth0=lab/c2-eth0.pcap host=lab/host-any.pcap && render lab-any "proto icmp"
mapfile -t c2c < <(specs c2c c1-eth0 c1-veth c2-eth0 c2-veth docker0 uplink)
import c2c "${c2c[@]}" && render c2c "flow 1"
mapfile -t gso < <(specs gso c1-eth0 c1-veth docker0 uplink)
import gso "${gso[@]}" && render gso "proto tcp"
import nat inside=tracer/nat_inside.pcap outside=tracer/nat_outside.pcap && render nat "flow 1"

# A live capture (tests/data/live: conntrack, a traceroute through the NAT, ICMP errors), as it was stored.
render live "proto udp, host 172.17.0.2"

# Every capture of tests/data/tracer that imports (also the truncated ones, which keep what they read), alone.
for file in tracer/*.pcap tracer/*.pcapng; do
    name=$(basename "$file")
    name=tracer-${name//./-}
    import "$name" "$(basename "${file%.*}")=$file" || continue
    hoptrace report --db "$name.db" --format json -o /dev/null 2>/dev/null || continue
    render "$name" "flow 1"
done
