#!/usr/bin/env bash
# install-deps.sh -- installs the Debian packages ndingest needs to build, test and
# benchmark, only those missing. Idempotent; as root it installs, otherwise it prints
# the exact apt-get line to run.
set -euo pipefail

pkgs=(
    build-essential pkg-config
    libevent-dev zlib1g-dev node-llhttp libcmocka-dev
    python3 python3-pytest python3-h11
    curl apache2-utils wrk gnuplot-nox
    clang libclang-rt-14-dev valgrind cppcheck clang-tidy strace nginx-light
    g++ libsimdjson-dev
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages; run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
