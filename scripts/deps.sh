#!/usr/bin/env bash
# Makes sure the Debian packages libdsync builds and tests with are present.
# As root it installs what is missing; otherwise it names the packages and stops.
# Arguments name more packages a target needs (make docs: graphviz).
set -euo pipefail

pkgs=(build-essential pkg-config libhiredis-dev libjansson-dev libcmocka-dev libcivetweb-dev
      redis-server curl g++ python3 python3-jsonschema python3-yaml docker-compose python3-locust "$@")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "libdsync needs these Debian packages: ${missing[*]}" >&2
    echo "Install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "Installing missing packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package starts a system redis on 6379; our tests and cluster run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
