#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, and any named as arguments (make fuzz:
# clang), once (no-op when all are present).
set -euo pipefail
# OpenMPI: tensor parallelism starts its ranks with mpirun (the TP tests run 2 and 3 CPU ranks).
# cpp-httplib: the OpenAI-compatible server (`nanoinfer serve`). pybind11 + Python's headers: the
# Python module.
pkgs=(cmake g++ make git python3 python3-pip python3-dev pybind11-dev libgtest-dev libgmock-dev
      libbenchmark-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev pkg-config clang-format
      clang-tidy libopenmpi-dev openmpi-bin "$@")
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
