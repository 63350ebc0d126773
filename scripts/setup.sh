#!/usr/bin/env bash
# Installs what building and testing Cairn needs on a fresh Debian machine
# with Rust (as root, or with sudo). Idempotent: does nothing when all is there.
set -euo pipefail

# Debian packages the build and tests need: RocksDB's bindings need
# libclang-dev; the S3 tests run rclone, s3cmd and restic, and make a
# Python venv for boto3 and the aws cli; the mount needs fuse3
# (fusermount3), and its tests run rsync, git, tar and sqlite3; a headless
# chromium renders the node dashboard in its test.
PACKAGES=(libclang-dev rclone s3cmd restic python3-venv fuse3 rsync git tar sqlite3 chromium)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    # No recommends: rclone's would pull in FUSE 2, which conflicts with fuse3.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust 1.88 or newer (rustup)" >&2; exit 1; }

# Keep build products between runs: a clean build is long on small machines.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn/target}"

# S3 clients the gateway tests drive, in a venv of their own (pinned, so a
# new release cannot change what the tests test).
export CAIRN_VENV="${CAIRN_VENV:-$HOME/.cache/cairn/venv}"
PY_TOOLS=(boto3==1.44.8 botocore==1.44.8 awscli==1.46.3)
if ! "$CAIRN_VENV/bin/python" -c 'import boto3, awscli' >/dev/null 2>&1 \
    || [[ "$(cat "$CAIRN_VENV/.tools" 2>/dev/null)" != "${PY_TOOLS[*]}" ]]; then
    echo "setup: installing ${PY_TOOLS[*]} into $CAIRN_VENV" >&2
    rm -rf "$CAIRN_VENV"
    python3 -m venv "$CAIRN_VENV"
    "$CAIRN_VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
    echo "${PY_TOOLS[*]}" > "$CAIRN_VENV/.tools"
fi
