//! Small signaling servers of the original's two other dialects, written from their message
//! tables (the seed's `examples/signaling_server/README.md` and `server.js` for `Node`; the
//! later in-process server's `signaling/websocket/handler.rs` for `Original`). They relay
//! between peers only (no server peer of their own), and they are as strict as the
//! originals: a param the original required is required here, so a client that joins them
//! speaks the original's exact shapes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Which of the original's servers to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The later in-process server: `peer.*`, string capabilities, `from`/`to`.
    Original,
    /// The bundled Node server: `announce`, `offer`, `to_peer_id`/`from_peer_id`.
    Node,
}

type Peers = Arc<Mutex<HashMap<String, Entry>>>;

struct Entry {
    tx: mpsc::Sender<String>,
    capabilities: Value,
    metadata: Value,
}

/// A running server; stops when dropped.
pub struct DialectServer {
    pub address: SocketAddr,
    peers: Peers,
    task: JoinHandle<()>,
}

impl Drop for DialectServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DialectServer {
    pub async fn start(kind: Kind) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let peers = Peers::default();
        let shared = Arc::clone(&peers);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                connections.spawn(connection(kind, Arc::clone(&shared), tcp));
            }
        });
        Self {
            address,
            peers,
            task,
        }
    }

    /// `ws://…/ws` (the Node server answered on any path).
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.address)
    }

    pub fn has_peer(&self, peer_id: &str) -> bool {
        self.peers.lock().unwrap().contains_key(peer_id)
    }
}

fn result(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

fn error(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

async fn connection(kind: Kind, peers: Peers, tcp: tokio::net::TcpStream) {
    let Ok(socket) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (mut sink, mut stream) = socket.split();
    // Bounded like every queue a peer can fill; a test never comes near it.
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let mut me: Option<String> = None;
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            let _ = tx.send(error(&Value::Null, -32700, "Parse error")).await;
            continue;
        };
        let answer = match kind {
            Kind::Original => original(&peers, &tx, &mut me, &message),
            Kind::Node => node(&peers, &tx, &mut me, &message),
        };
        let _ = tx.send(answer).await;
    }
    if let Some(me) = me {
        let mut peers = peers.lock().unwrap();
        peers.remove(&me);
        let (method, params) = match kind {
            Kind::Original => ("peer.left", json!({"peer_id": me})),
            Kind::Node => ("peer_left", json!({"peer_id": me})),
        };
        for entry in peers.values() {
            let _ = entry.tx.try_send(notification(method, params.clone()));
        }
    }
    writer.abort();
}

/// Registers `peer_id`, tells the others, and returns the announce result.
fn register(
    peers: &Peers,
    tx: &mpsc::Sender<String>,
    peer_id: &str,
    capabilities: Value,
    metadata: Value,
    joined: &str,
) -> Value {
    let mut peers = peers.lock().unwrap();
    let others: Vec<String> = peers.keys().cloned().collect();
    for entry in peers.values() {
        let params =
            json!({"peer_id": peer_id, "capabilities": capabilities, "metadata": metadata});
        let _ = entry.tx.try_send(notification(joined, params));
    }
    peers.insert(
        peer_id.to_owned(),
        Entry {
            tx: tx.clone(),
            capabilities,
            metadata,
        },
    );
    json!({"peer_id": peer_id, "peers_count": others.len() + 1, "other_peers": others})
}

/// Sends a notification to `to`; false when there is no such peer.
fn forward(peers: &Peers, to: &str, method: &str, params: Value) -> bool {
    match peers.lock().unwrap().get(to) {
        Some(entry) => entry.tx.try_send(notification(method, params)).is_ok(),
        None => false,
    }
}

fn list(peers: &Peers) -> Value {
    let peers: Vec<Value> = peers
        .lock()
        .unwrap()
        .iter()
        .map(|(id, e)| json!({"peer_id": id, "capabilities": e.capabilities, "metadata": e.metadata, "state": "available"}))
        .collect();
    json!({"peers": peers, "count": peers.len()})
}

/// The in-process server. Params are read as its serde structs did: a missing required
/// field (or capabilities that are not strings) is an internal error with id null.
fn original(
    peers: &Peers,
    tx: &mpsc::Sender<String>,
    me: &mut Option<String>,
    message: &Value,
) -> String {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let p = &message["params"];
    let text = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_owned);
    let malformed = || error(&Value::Null, -32603, "invalid params");
    match message["method"].as_str().unwrap_or_default() {
        "peer.announce" => {
            let (Some(peer_id), Some(capabilities)) = (text("peer_id"), p.get("capabilities"))
            else {
                return malformed();
            };
            let names = capabilities
                .as_array()
                .filter(|a| a.iter().all(Value::is_string));
            if names.is_none() {
                return malformed();
            }
            if peers.lock().unwrap().contains_key(&peer_id) {
                return error(&id, -32602, &format!("Peer {peer_id} already announced"));
            }
            let metadata = p.get("user_data").cloned().unwrap_or(json!({}));
            let mut ack = register(
                peers,
                tx,
                &peer_id,
                capabilities.clone(),
                metadata,
                "peer.joined",
            );
            ack["success"] = json!(true);
            *me = Some(peer_id);
            result(&id, ack)
        }
        method @ ("peer.offer" | "peer.answer" | "peer.ice_candidate") => {
            let Some(from) = me.clone() else {
                return error(&id, -32600, "Not announced: call peer.announce first");
            };
            // `from` is required by its params struct (and then ignored).
            let (Some(_), Some(to)) = (text("from"), text("to")) else {
                return malformed();
            };
            let params = if method == "peer.ice_candidate" {
                let Some(candidate) = text("candidate") else {
                    return malformed();
                };
                json!({"from": from, "to": to, "candidate": candidate, "sdp_mid": p.get("sdp_mid"), "sdp_m_line_index": p.get("sdp_m_line_index")})
            } else {
                let Some(sdp) = text("sdp") else {
                    return malformed();
                };
                json!({"from": from, "to": to, "sdp": sdp})
            };
            if forward(peers, &to, method, params) {
                result(&id, json!({"success": true, "to_peer_id": to}))
            } else {
                error(&id, -32000, &format!("Peer not found: {to}"))
            }
        }
        "peer.disconnect" => {
            let Some(peer_id) = text("peer_id") else {
                return malformed();
            };
            let reason = p.get("reason").cloned().unwrap_or(Value::Null);
            forward(
                peers,
                &peer_id,
                "peer.disconnected",
                json!({"peer_id": peer_id, "reason": reason}),
            );
            result(&id, json!({"success": true, "peer_id": peer_id}))
        }
        "peer.list" | "list_peers" => result(&id, list(peers)),
        other => error(&id, -32601, &format!("Unknown method: {other}")),
    }
}

/// The Node server.
fn node(
    peers: &Peers,
    tx: &mpsc::Sender<String>,
    me: &mut Option<String>,
    message: &Value,
) -> String {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    if message["jsonrpc"] != "2.0" {
        return error(
            &Value::Null,
            -32600,
            "Invalid Request: jsonrpc must be \"2.0\"",
        );
    }
    let p = &message["params"];
    let text = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_owned);
    let method = message["method"].as_str().unwrap_or_default();
    if ["offer", "answer", "ice_candidate", "disconnect"].contains(&method) && me.is_none() {
        return error(&id, -32000, "Not announced: call announce first");
    }
    let from = me.clone().unwrap_or_default();
    match method {
        "announce" => {
            let Some(peer_id) = text("peer_id") else {
                return error(&id, -32602, "Invalid params: peer_id is required");
            };
            if peers.lock().unwrap().contains_key(&peer_id) {
                return error(&id, -32000, &format!("Peer {peer_id} already announced"));
            }
            let capabilities = p.get("capabilities").cloned().unwrap_or(json!({}));
            let ack = register(peers, tx, &peer_id, capabilities, json!({}), "peer_joined");
            *me = Some(peer_id);
            result(&id, ack)
        }
        "offer" | "answer" => {
            let (Some(to), Some(sdp)) = (text("to_peer_id"), text("sdp")) else {
                return error(
                    &id,
                    -32602,
                    "Invalid params: to_peer_id and sdp are required",
                );
            };
            let kind = text("type").unwrap_or_else(|| method.to_owned());
            let (params, answer) = if method == "offer" {
                let offer_id = format!("{from}_{to}_1");
                (
                    json!({"from_peer_id": from, "offer_id": offer_id, "sdp": sdp, "type": kind}),
                    json!({"offer_id": offer_id, "to_peer_id": to}),
                )
            } else {
                (
                    json!({"from_peer_id": from, "sdp": sdp, "type": kind}),
                    json!({"to_peer_id": to}),
                )
            };
            if forward(peers, &to, method, params) {
                result(&id, answer)
            } else {
                error(&id, -32000, &format!("Peer not found: {to}"))
            }
        }
        "ice_candidate" => {
            let (Some(to), Some(candidate)) = (text("to_peer_id"), text("candidate")) else {
                return error(
                    &id,
                    -32602,
                    "Invalid params: to_peer_id and candidate are required",
                );
            };
            let params = json!({"from_peer_id": from, "candidate": candidate, "sdp_mid": p.get("sdp_mid"), "sdp_mline_index": p.get("sdp_mline_index")});
            if forward(peers, &to, "ice_candidate", params) {
                result(&id, json!({"to_peer_id": to}))
            } else {
                error(&id, -32000, &format!("Peer not found: {to}"))
            }
        }
        "disconnect" => {
            let Some(peer_id) = text("peer_id") else {
                return error(&id, -32602, "Invalid params: peer_id is required");
            };
            forward(
                peers,
                &peer_id,
                "peer_disconnected",
                json!({"peer_id": from}),
            );
            result(&id, json!({"peer_id": peer_id}))
        }
        "list_peers" => result(&id, list(peers)),
        other => error(&id, -32601, &format!("Method not found: {other}")),
    }
}
