#!/usr/bin/env bash
# Installs what building and testing Cairn needs on a fresh Debian machine
# with Rust (as root, or with sudo). Idempotent: does nothing when all is there.
set -euo pipefail

# Debian packages the build and tests need. (RocksDB's bindings need
# libclang-dev; the FUSE tests will need fuse3.)
PACKAGES=(libclang-dev)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust 1.88 or newer (rustup)" >&2; exit 1; }

# Keep build products between runs: a clean build is long on small machines.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"
