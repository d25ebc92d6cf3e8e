#!/usr/bin/env bash
# `make fuzz-check`: builds the cargo-fuzz targets of fuzz/ and runs each one on its committed
# corpus (fuzz/corpus/<target>) for FUZZ_SECONDS (30 by default), one job, failing on any crash,
# timeout or out-of-memory. Crashing inputs land in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh                    every target, 30 s each (CI)
#   FUZZ_SECONDS=600 fuzz/run.sh sdp_offer    one target, 10 minutes
#
# Only a stable toolchain is needed: with `--sanitizer none` cargo-fuzz passes no -Z flag to
# rustc (RUSTC_BOOTSTRAP=1 stays set so the build is the same whatever it needs). The build goes to FUZZ_TARGET_DIR, outside the clone so later runs reuse it. Each run
# happens in a network namespace of its own with only loopback (when unshare works, as root):
# a fuzzed SDP can name any address as an ICE candidate, and none of it may leave the host.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(sdp_offer datachannel jsonrpc manifest)
[ "$#" -gt 0 ] && TARGETS=("$@")
SECONDS_EACH="${FUZZ_SECONDS:-30}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/remotemedia-webrtc/fuzz-target}"
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
	echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into ~/.cargo/bin"
	cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

started=$(date +%s)
cargo fuzz build --sanitizer none --target-dir "$TARGET_DIR"
echo "fuzz: targets built in $(($(date +%s) - started)) s"
BIN="$TARGET_DIR/x86_64-unknown-linux-gnu/release"

# Largest input each target tries: SDP offers and JSON-RPC frames are a few KiB in real life
# (the server's limits are 64 KiB and 256 KiB), data-channel messages and manifests smaller.
max_len() {
	case "$1" in
	sdp_offer | jsonrpc) echo 16384 ;;
	*) echo 8192 ;;
	esac
}

# A loopback-only network namespace, or the host's network when one cannot be made.
isolated() {
	if command -v ip >/dev/null && unshare --net true 2>/dev/null; then
		unshare --net -- sh -c 'ip link set lo up && exec "$@"' sh "$@"
	else
		echo "fuzz: cannot unshare the network (not root?); running on the host's" >&2
		"$@"
	fi
}

for target in "${TARGETS[@]}"; do
	[ -d "fuzz/corpus/$target" ] || { echo "fuzz: no corpus for $target" >&2; exit 1; }
	# New inputs go to a scratch directory; the committed corpus is only read.
	scratch="$(mktemp -d)"
	mkdir -p "fuzz/artifacts/$target"
	dict=()
	[ -f "fuzz/dict/$target.dict" ] && dict=("-dict=fuzz/dict/$target.dict")
	echo "fuzz: $target for $SECONDS_EACH s"
	status=0
	isolated "$BIN/$target" "$scratch" "fuzz/corpus/$target" \
		-max_total_time="$SECONDS_EACH" -max_len="$(max_len "$target")" -timeout=20 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="fuzz/artifacts/$target/" "${dict[@]}" || status=$?
	rm -rf "$scratch"
	if [ "$status" -ne 0 ]; then
		echo "fuzz: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
		exit "$status"
	fi
done
echo "fuzz: every target ran $SECONDS_EACH s without a crash"
