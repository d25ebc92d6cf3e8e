#!/usr/bin/env bash
# make bench-connect: offer->connected with clients other than our own webrtc-crate one, our
# server and Janus' EchoTest side by side: aiortc (Python, installed from PyPI into a venv under
# ~/.cache) and headless Chromium, each against both servers, runs interleaved; prints the
# medians and the ratio ours/Janus for each client (benches/connect_time.py does the runs).
#
# Both servers run in one network namespace (a veth pair with a /30; Janus' libnice gathers no
# loopback candidates), pinned to one core; the clients run on the host side. The namespace
# has a default route back through the veth, as a server has: a client check sent from another
# of the host's addresses is answered too (see README, Performance).
# Needs root (ip netns), the Debian `janus` package, chromium, python3-venv and a release
# webrtc_server in $BIN.
set -euo pipefail
# shellcheck source=benches/netns_janus.sh
. "$(dirname "$0")/netns_janus.sh"

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
OUT=${OUT:-target/bench}
NS=${NS:-rmconnect}
HOST_IP=${HOST_IP:-10.204.0.1}
NS_IP=${NS_IP:-10.204.0.2}
RUNS=${RUNS:-15}
CLIENTS=${CLIENTS:-aiortc chromium}
SERVER_CORE=${SERVER_CORE:-0}
# Set to 0 to leave the namespace without a default route (then a lite server cannot answer
# checks from the client's other addresses; ICE-full Janus triggers the right pair itself).
NS_DEFAULT_ROUTE=${NS_DEFAULT_ROUTE:-1}
VENV=${VENV:-$HOME/.cache/remotemedia-webrtc/aiortc-venv}
EXTRA=${EXTRA:-}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

command -v janus >/dev/null || { echo "install the Debian janus package" >&2; exit 1; }
[ -x "$BIN/webrtc_server" ] || { echo "no release webrtc_server in $BIN" >&2; exit 1; }
mkdir -p "$OUT"
JANUS_DIR=$(mktemp -d)
JANUS_PID=""
OURS_PID=""

cleanup() {
    [ -n "$JANUS_PID" ] && kill "$JANUS_PID" 2>/dev/null && wait "$JANUS_PID" 2>/dev/null
    [ -n "$OURS_PID" ] && kill "$OURS_PID" 2>/dev/null && wait "$OURS_PID" 2>/dev/null
    $SUDO ip netns del "$NS" 2>/dev/null || true
    $SUDO ip link del "$NS-h" 2>/dev/null || true
    rm -rf "$JANUS_DIR"
}
trap cleanup EXIT INT TERM

# aiortc from PyPI, once.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import aiortc, aiohttp' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q aiortc aiohttp
fi

# The namespace, its /30 and a minimal Janus (benches/netns_janus.sh).
make_netns
if [ "$NS_DEFAULT_ROUTE" = 1 ]; then
    $SUDO ip netns exec "$NS" ip route add default via "$HOST_IP"
fi
write_janus_config

$SUDO ip netns exec "$NS" taskset -c "$SERVER_CORE" janus -F "$JANUS_DIR/conf" \
    -C "$JANUS_DIR/conf/janus.jcfg" >"$OUT/connect-janus.log" 2>&1 &
JANUS_PID=$!
# Ours: the forwarding manifest (Opus echoed without transcoding, as EchoTest does).
# shellcheck disable=SC2086
RUST_LOG=${RUST_LOG:-warn} $SUDO ip netns exec "$NS" taskset -c "$SERVER_CORE" \
    "$BIN/webrtc_server" --mode grpc --grpc-address "$NS_IP:50051" \
    --http-address "$NS_IP:8080" --manifest examples/forward.yaml --ice-ips "$NS_IP" \
    --allowed-origins '*' $EXTRA >"$OUT/connect-ours.log" 2>&1 &
OURS_PID=$!
for url in "http://$NS_IP:8088/janus/info" "http://$NS_IP:8080/healthz"; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "$url" && break
        sleep 0.1
    done
done

RESULTS=()
for client in $CLIENTS; do
    echo "== $client: $RUNS runs each, interleaved"
    RESULT=$("$VENV/bin/python" benches/connect_time.py --client "$client" --runs "$RUNS" \
        --ours "ws://$NS_IP:8080/ws" --janus "http://$NS_IP:8088/janus" | tee /dev/stderr)
    RESULTS+=("$RESULT")
done
echo
echo "== offer->connected, ours vs Janus EchoTest (median of $RUNS)"
printf '%s\n' "${RESULTS[@]}"
