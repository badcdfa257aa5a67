#!/usr/bin/env bash
# install-deps.sh -- installs the Debian packages ndingest needs to build, test and
# benchmark, only those missing. Idempotent; as root it installs, otherwise it prints
# the exact apt-get line to run. ClickHouse (the dataset tests' warehouse and delivery's
# destination) is installed without its system service running, and ZooKeeper (its
# replication's coordinator) is only installed: the tests start their own servers on free
# ports. zookeeper's own dependencies bring what tests/integration/clickhouse.py runs it
# with, also under --no-install-recommends: default-jre (a Depends, with
# default-jre-headless) and, through libzookeeper-java, libslf4j-java (slf4j-simple.jar,
# its log). libcurl: delivery's HTTP client; faketime: the tests' midnight. libpq and
# PostgreSQL 15 (delivery into PostgreSQL): the package's own cluster is neither started nor
# enabled; the tests initdb their own (tests/integration/postgres.py). libxxhash: the
# Idempotency-Key fingerprints (XXH3).
set -euo pipefail

pkgs=(
    build-essential pkg-config
    libevent-dev zlib1g-dev node-llhttp libcmocka-dev
    python3 python3-pytest python3-h11
    curl apache2-utils wrk gnuplot-nox
    clang libclang-rt-14-dev valgrind cppcheck clang-tidy strace nginx-light
    g++ libsimdjson-dev
    clickhouse-server clickhouse-client
    libcurl4-openssl-dev zookeeper faketime
    libpq-dev postgresql libxxhash-dev
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

# clickhouse-server's postinst runs `invoke-rc.d clickhouse-server start` (a daemon on
# ports 8123, 9000 and 9009, failing the install where it cannot start), and postgresql's
# starts its cluster "main" on port 5432. A policy-rc.d
# that answers 101 makes invoke-rc.d skip that; one already present (Docker images ship
# one) is left as it is.
policy=/usr/sbin/policy-rc.d
if [[ ( " ${missing[*]} " == *" clickhouse-server "* || " ${missing[*]} " == *" postgresql "* ) && ! -e $policy ]]; then
    printf '#!/bin/sh\n# install-deps.sh: no service starts while it installs\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

# Nor do they start at the next boot (the packages enable them under both init systems).
if [[ " ${missing[*]} " == *" clickhouse-server "* ]]; then
    update-rc.d clickhouse-server disable >/dev/null 2>&1 || true
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper disable clickhouse-server.service >/dev/null 2>&1 || true
    fi
fi
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    update-rc.d postgresql disable >/dev/null 2>&1 || true
    if command -v deb-systemd-helper >/dev/null; then
        deb-systemd-helper disable postgresql.service >/dev/null 2>&1 || true
    fi
fi
