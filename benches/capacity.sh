#!/usr/bin/env bash
# make bench: the capacity sweeps. A fresh release server per step pinned to core 0, the
# load generator pinned to core 1; steps of 20 peers (loopback.yaml: decode + encode per
# peer) and of 50 (forward.yaml: RTP sent back untouched) until loss > 0.5 % or latency
# p99 > 60 ms. Tables on stdout; CSV and PNG under target/bench/.
set -euo pipefail

TARGET=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET/release}
OUT=${OUT:-target/bench}
DURATION=${DURATION:-20}
NOTE=${NOTE:-}

"$BIN/webrtc_capacity" --label loopback --manifest examples/loopback.yaml \
    --start 20 --step 20 --max 400 --duration-s "$DURATION" --out-dir "$OUT" --note "$NOTE"
"$BIN/webrtc_capacity" --label forward --manifest examples/forward.yaml --ramp-per-s 50 \
    --start 50 --step 50 --max 1000 --duration-s "$DURATION" --out-dir "$OUT" --note "$NOTE"
