#!/usr/bin/env bash
# make bench-janus, second half: rooms of P participants (P = 2, 5, 10), each publishing the
# Opus test signal, everyone subscribed to everyone, on our server (rooms over gRPC signaling)
# and on Janus' VideoRoom, swept in forwarded streams R·P·(P−1) so both servers and every P
# are compared at equal forwarded streams. Latency is send to receive, read from a stamp the
# load generator writes into each packet's Opus padding (the same for both servers).
#
# Same setting as benches/janus.sh: both servers in a network namespace, pinned to core 0;
# the load generator on the host side, pinned to core 1. Needs root and the `janus` package.
set -euo pipefail
# shellcheck source=benches/netns_janus.sh
. "$(dirname "$0")/netns_janus.sh"

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
OUT=${OUT:-target/bench}
NS=${NS:-rmbench}
HOST_IP=${HOST_IP:-10.203.0.1}
NS_IP=${NS_IP:-10.203.0.2}
ROOM_SIZES=${ROOM_SIZES:-2 5 10}
# Forwarded streams per step: multiples of 180 are whole rooms for P = 2, 5 and 10.
START=${START:-180}
STEP=${STEP:-180}
MAX=${MAX:-900}
DURATION=${DURATION:-8}
RAMP=${RAMP:-60}
SERVERS=${SERVERS:-ours janus}
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

make_netns
write_janus_config

SWEEP=(--start "$START" --step "$STEP" --max "$MAX" --duration-s "$DURATION"
    --ramp-per-s "$RAMP" --server-ip "$NS_IP" --client-ip "$HOST_IP" --out-dir "$OUT"
    --note "$NOTE")
SUMMARY="$OUT/rooms-summary.txt"
: >"$SUMMARY"

for server in $SERVERS; do
    if [ "$server" = janus ]; then
        $SUDO ip netns exec "$NS" taskset -c 0 janus -F "$JANUS_DIR/conf" \
            -C "$JANUS_DIR/conf/janus.jcfg" >"$OUT/janus-rooms.log" 2>&1 &
        JANUS_PID=$!
        for _ in $(seq 50); do
            curl -s -o /dev/null "http://$NS_IP:8088/janus/info" && break
            sleep 0.2
        done
    fi
    for p in $ROOM_SIZES; do
        echo "== $server, rooms of $p"
        if [ "$server" = janus ]; then
            "$BIN/webrtc_capacity" --label "rooms-janus-p$p" --protocol janus --rooms-of "$p" \
                --external-pid "$JANUS_PID" --server-url "http://$NS_IP:8088/janus" \
                "${SWEEP[@]}" | tee "$OUT/rooms-janus-p$p.txt"
        else
            "$BIN/webrtc_capacity" --label "rooms-ours-p$p" --rooms-of "$p" \
                --manifest examples/forward.yaml --netns "$NS" "${SWEEP[@]}" \
                | tee "$OUT/rooms-ours-p$p.txt"
        fi
        grep 'peers within' "$OUT/rooms-$server-p$p.txt" >>"$SUMMARY" || true
    done
    if [ -n "$JANUS_PID" ]; then
        kill "$JANUS_PID" 2>/dev/null && wait "$JANUS_PID" 2>/dev/null || true
        JANUS_PID=""
    fi
done
echo
echo "== rooms: most forwarded streams within < 0.5 % loss and p99 <= 60 ms"
cat "$SUMMARY"
LABELS=()
for server in $SERVERS; do for p in $ROOM_SIZES; do LABELS+=("rooms-$server-p$p"); done; done
"$BIN/webrtc_rooms_plot" "$OUT" "$OUT/rooms-compare.png" "${LABELS[@]}" || true
