# Sourced by benches/janus.sh and benches/connect_time.sh: the network namespace both servers
# run in, and the minimal Janus they are compared with. Janus (libnice) gathers no loopback
# candidates, hence the namespace: a veth pair with a /30, the clients on the host side.
# Reads NS, HOST_IP, NS_IP, JANUS_DIR and SUDO from the caller.

# The namespace and its /30 (an old one of the same name is removed first).
make_netns() {
    $SUDO ip netns del "$NS" 2>/dev/null || true
    $SUDO ip link del "$NS-h" 2>/dev/null || true
    $SUDO ip netns add "$NS"
    $SUDO ip link add "$NS-h" type veth peer name "$NS-n"
    $SUDO ip link set "$NS-n" netns "$NS"
    $SUDO ip addr add "$HOST_IP/30" dev "$NS-h"
    $SUDO ip link set "$NS-h" up
    $SUDO ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$NS-n"
    $SUDO ip netns exec "$NS" ip link set "$NS-n" up
    $SUDO ip netns exec "$NS" ip link set lo up
}

# A minimal Janus in $JANUS_DIR: the EchoTest and VideoRoom plugins and the HTTP transport only (port 8088 on
# the namespace's address), no STUN, logs quiet. Start it with
# `janus -F "$JANUS_DIR/conf" -C "$JANUS_DIR/conf/janus.jcfg"` inside the namespace.
write_janus_config() {
    mkdir -p "$JANUS_DIR/conf" "$JANUS_DIR/plugins" "$JANUS_DIR/transports"
    local lib=/usr/lib/x86_64-linux-gnu/janus
    ln -sf "$lib/plugins/libjanus_echotest.so" "$JANUS_DIR/plugins/"
    ln -sf "$lib/plugins/libjanus_videoroom.so" "$JANUS_DIR/plugins/"
    ln -sf "$lib/transports/libjanus_http.so" "$JANUS_DIR/transports/"
    cat >"$JANUS_DIR/conf/janus.jcfg" <<CFG
general: {
    configs_folder = "$JANUS_DIR/conf"
    plugins_folder = "$JANUS_DIR/plugins"
    transports_folder = "$JANUS_DIR/transports"
    debug_level = 2
    session_timeout = 120
}
media: {
    rtp_port_range = "20000-40000"
}
nat: {
    ice_enforce_list = "$NS-n"
}
plugins: {}
transports: {}
events: {}
loggers: {}
CFG
    cat >"$JANUS_DIR/conf/janus.transport.http.jcfg" <<CFG
general: {
    json = "compact"
    base_path = "/janus"
    http = true
    port = 8088
    ip = "$NS_IP"
    https = false
}
admin: {
    admin_http = false
}
CFG
    echo 'general: {}' >"$JANUS_DIR/conf/janus.plugin.echotest.jcfg"
    # VideoRoom with no rooms of its own: the rooms sweep creates and destroys them.
    echo 'general: {}' >"$JANUS_DIR/conf/janus.plugin.videoroom.jcfg"
}
