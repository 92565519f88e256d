#!/bin/sh
# setup.sh: installs the Debian 12 packages PocketLLM builds with, if any is missing (needs root
# or sudo for apt-get). Safe to run again: it does nothing when everything is present.
set -eu
PKGS="build-essential cmake pkg-config git clang clang-format libclang-rt-dev libomp-dev
libopenblas-openmp-dev libsodium-dev libsqlite3-dev libcjson-dev libcurl4-openssl-dev
libmicrohttpd-dev libpcre2-dev libutf8proc-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "setup: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
