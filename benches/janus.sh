#!/usr/bin/env bash
# make bench-janus: our forwarding server and Janus' EchoTest side by side, on the same work
# (Opus RTP echoed without transcoding), swept with the same load generator.
#
# Janus (libnice) gathers no loopback candidates, so both servers run inside a network
# namespace of their own (a veth pair with a /30), the load generator on the host side.
# Needs root (ip netns), the Debian `janus` package and release binaries in $BIN.
set -euo pipefail
# shellcheck source=benches/netns_janus.sh
. "$(dirname "$0")/netns_janus.sh"

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
OUT=${OUT:-target/bench}
NS=${NS:-rmbench}
HOST_IP=${HOST_IP:-10.203.0.1}
NS_IP=${NS_IP:-10.203.0.2}
START=${START:-40}
STEP=${STEP:-40}
MAX=${MAX:-600}
DURATION=${DURATION:-20}
NOTE=${NOTE:-}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

mkdir -p "$OUT"
JANUS_DIR=$(mktemp -d)
JANUS_PID=""

cleanup() {
    [ -n "$JANUS_PID" ] && kill "$JANUS_PID" 2>/dev/null && wait "$JANUS_PID" 2>/dev/null
    $SUDO ip netns del "$NS" 2>/dev/null || true
    $SUDO ip link del "$NS-h" 2>/dev/null || true
    rm -rf "$JANUS_DIR"
}
trap cleanup EXIT INT TERM

# The namespace, its /30 and a minimal Janus (benches/netns_janus.sh).
make_netns
write_janus_config

echo "== our server (examples/forward.yaml) in netns $NS"
OURS=$("$BIN/webrtc_capacity" --label janus-compare-ours --manifest examples/forward.yaml \
    --netns "$NS" --server-ip "$NS_IP" --client-ip "$HOST_IP" \
    --start "$START" --step "$STEP" --max "$MAX" --duration-s "$DURATION" --ramp-per-s 50 \
    --out-dir "$OUT" --note "$NOTE" | tee -a /dev/stderr)

echo "== Janus EchoTest in netns $NS"
$SUDO ip netns exec "$NS" taskset -c 0 janus -F "$JANUS_DIR/conf" -C "$JANUS_DIR/conf/janus.jcfg" \
    >"$OUT/janus.log" 2>&1 &
JANUS_PID=$!
for _ in $(seq 50); do
    curl -s -o /dev/null "http://$NS_IP:8088/janus/info" && break
    sleep 0.2
done
JANUS=$("$BIN/webrtc_capacity" --label janus-compare-janus --protocol janus \
    --external-pid "$JANUS_PID" --server-url "http://$NS_IP:8088/janus" \
    --server-ip "$NS_IP" --client-ip "$HOST_IP" \
    --start "$START" --step "$STEP" --max "$MAX" --duration-s "$DURATION" --ramp-per-s 50 \
    --out-dir "$OUT" --note "$NOTE" | tee -a /dev/stderr)

# "<label> (<protocol>): N peers within ..." and the first table row's setup columns.
capacity() { sed -n 's/^.*): \([0-9]*\) peers within.*$/\1/p' <<<"$1" | head -1; }
setup_p50() { grep '^| [0-9]' <<<"$1" | head -1 | awk -F'|' '{gsub(/ /,"",$10); print $10}'; }
answer_p50() { grep '^| [0-9]' <<<"$1" | head -1 | awk -F'|' '{gsub(/ /,"",$9); print $9}'; }
OURS_N=$(capacity "$OURS"); JANUS_N=$(capacity "$JANUS")
echo
echo "== ours / Janus"
echo "peers at < 0.5 % loss: $OURS_N / $JANUS_N = $(awk -v a="$OURS_N" -v b="$JANUS_N" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')"
echo "offer->answer p50 (first step): $(answer_p50 "$OURS") / $(answer_p50 "$JANUS") ms = $(awk -v a="$(answer_p50 "$OURS")" -v b="$(answer_p50 "$JANUS")" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')"
echo "offer->connected p50 (first step): $(setup_p50 "$OURS") / $(setup_p50 "$JANUS") ms = $(awk -v a="$(setup_p50 "$OURS")" -v b="$(setup_p50 "$JANUS")" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }')"
