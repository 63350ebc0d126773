#!/usr/bin/env bash
# Cairn's main job on this machine. Until the network lands (storage-node
# and client issues) that is the data pipeline benchmark: encrypt,
# erasure-code and hash 256 MiB and back, next to the primitives alone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -p cairn-cli -p cairn-storage-node
exec "$CARGO_TARGET_DIR/release/cairn" bench pipeline "$@"
