#!/usr/bin/env bash
# Installs the Debian 12 packages hoptrace needs to build, test and run its lab. Idempotent; run as root.
set -euo pipefail
packages=(
  # build
  build-essential cmake pkg-config
  libpcap-dev libnl-3-dev libnl-route-3-dev libnl-nf-3-dev libboost-program-options-dev libsqlite3-dev
  libexpected-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libcap-dev
  libmnl-dev libnftnl-dev  # --trace-rules: netfilter trace events
  clang clang-tidy clang-format  # libFuzzer targets (fuzz/) and .ci/lint.sh, run by .ci/run
  # lab, tests and benchmarks
  iproute2 iptables nftables conntrack tcpdump tshark socat iputils-ping traceroute ethtool sqlite3 python3 procps
  chromium  # headless, renders the HTML report in tests/e2e/html_report.py
  # tests/e2e/docker_engine.py: a real dockerd in a namespace of its own, an image built offline from busybox
  docker.io busybox-static
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
  # No package may start a daemon here (docker.io's and containerd's postinst would start dockerd and
  # containerd on this machine): invoke-rc.d and deb-systemd-invoke ask policy-rc.d, and 101 means "not
  # allowed". The e2e test starts its own dockerd in a namespace of its own. Removed afterwards only if
  # this script wrote it.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# written by hoptrace install-deps.sh while apt runs: start no services\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  daemons() { { pgrep -x dockerd; pgrep -x containerd; } | sort; }
  before=$(daemons || true)
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  started=$(comm -13 <(echo "$before") <(daemons || true))
  if [[ -n $started ]]; then
    echo "install-deps.sh: installing started a daemon anyway (pid ${started//$'\n'/, }); stop it: systemctl stop docker containerd" >&2
    exit 1
  fi
fi
