#!/usr/bin/env bash
# Installs the Debian 12 packages hoptrace needs to build, test and run its lab. Idempotent; run as root.
set -euo pipefail
packages=(
  # build
  build-essential cmake pkg-config
  libpcap-dev libnl-3-dev libnl-route-3-dev libnl-nf-3-dev libboost-program-options-dev libsqlite3-dev
  libexpected-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libcap-dev
  clang clang-tidy clang-format  # libFuzzer targets (fuzz/) and .ci/lint.sh, run by .ci/run
  # lab, tests and benchmarks
  iproute2 iptables conntrack tcpdump tshark socat iputils-ping traceroute ethtool sqlite3 python3 procps
  chromium  # headless, renders the HTML report in tests/e2e/html_report.py
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps.sh: these Debian packages are missing: ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
