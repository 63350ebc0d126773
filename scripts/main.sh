#!/usr/bin/env bash
# Cairn's main job on the embedded default: a local network of 8 storage
# nodes on 127.0.0.1 (`cairn devnet`), with a client config and key written
# for you. It prints how to use it and runs until Ctrl-C; run it again to
# resume with the same data. Pass e.g. `--nodes 12 --dir /tmp/net`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -p cairn-cli -p cairn-storage-node
export PATH="$CARGO_TARGET_DIR/release:$PATH"
exec cairn devnet --dir "${CAIRN_DEVNET_DIR:-$HOME/.cache/cairn/devnet}" "$@"
