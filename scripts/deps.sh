#!/usr/bin/env bash
# Installs what segforge needs from Debian's packages, only if missing.
# Runs as root (or through sudo when available). Safe to run again.
set -euo pipefail
pkgs=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  librdkafka-dev libroaring-dev libzstd-dev libavro-dev libjansson-dev
  libxxhash-dev libmicrohttpd-dev libcmocka-dev libisal-dev libopenblas-dev libopenblas0-serial
  python3 python3-avro python3-kafka python3-faiss python3-numpy python3-packaging dataset-fashion-mnist
  kcat time
)
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
