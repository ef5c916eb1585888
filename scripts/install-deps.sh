#!/usr/bin/env bash
# Installs what lowbit needs to build and test from Debian 12's packages.
# As root it runs apt-get; otherwise it lists the missing packages and how to install them.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libgtest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev
      libfmt-dev libsentencepiece-dev libopenblas-dev liblapacke-dev libicu-dev gnuplot-nox fonts-dejavu-core
      clang-14 libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
