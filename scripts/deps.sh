#!/usr/bin/env bash
# Installs what segforge needs from Debian's packages, only if missing.
# Runs as root (or through sudo when available). Safe to run again.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  librdkafka-dev libroaring-dev libzstd-dev libavro-dev libjansson-dev
  libxxhash-dev libmicrohttpd-dev libcmocka-dev libisal-dev clang-format
  python3 python3-avro python3-kafka python3-faiss python3-numpy
  kcat time
  # systemd-analyze, which checks packaging/segforge.service (tests/cli_packaging.sh)
  systemd
)
# Benchmarks only (bench/*.sh run `scripts/deps.sh --bench`): OpenBLAS for the
# k-means comparison and the AVX2 FAISS build, and the Fashion-MNIST data.
if [ "${1:-}" = --bench ]; then
  pkgs+=(libopenblas-dev libopenblas0-serial python3-packaging dataset-fashion-mnist)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
