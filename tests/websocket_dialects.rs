//! The original's WebSocket dialects. `/ws` takes a client of each (the original's
//! WebSocket client and its in-process server's browsers: `peer.*` with string capabilities,
//! `from`/`to`, `sdp_m_line_index`; the Node signaling server's: `announce`, `offer`,
//! `to_peer_id`, `from_peer_id`) and answers it in its own shape; and `--mode websocket`
//! joins a signaling server of each (small ones written here from the original's tables),
//! answering a browser-style peer whose tone comes back.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::VecDeque;

use common::client::{ClientOptions, ClientPeer};
use common::dialect_server::{DialectServer, Kind};
use common::websocket::WsClient;
use common::TestServer;
use remotemedia_webrtc::config::{Config, Mode};
use remotemedia_webrtc::proto::signaling as pb;
use remotemedia_webrtc::signaling::dialect::DialectChoice;
use remotemedia_webrtc::signaling::SessionHost;
use remotemedia_webrtc::websocket_mode::WebSocketPeer;
use serde_json::{json, Value};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;

const SERVER: &str = "remotemedia-server";
const FAKE_SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

/// The shapes a browser-style client of each dialect sends, written from the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Browser {
    Ours,
    Original,
    Node,
}

impl Browser {
    fn announce(self, me: &str) -> (&'static str, Value) {
        match self {
            Self::Ours => (
                "peer.announce",
                json!({"peer_id": me, "capabilities": {"audio": true}}),
            ),
            Self::Original => (
                "peer.announce",
                json!({"peer_id": me, "capabilities": ["audio"], "user_data": {"app": "lfm2"}}),
            ),
            Self::Node => (
                "announce",
                json!({"peer_id": me, "capabilities": {"audio": true, "video": false}}),
            ),
        }
    }

    fn offer(self, me: &str, to: &str, sdp: &str) -> (&'static str, Value) {
        match self {
            Self::Ours => ("peer.offer", json!({"to": to, "sdp": sdp})),
            Self::Original => ("peer.offer", json!({"from": me, "to": to, "sdp": sdp})),
            Self::Node => (
                "offer",
                json!({"to_peer_id": to, "sdp": sdp, "type": "offer"}),
            ),
        }
    }

    fn candidate(self, me: &str, to: &str, c: &RTCIceCandidateInit) -> (&'static str, Value) {
        match self {
            Self::Ours => (
                "peer.ice_candidate",
                json!({"to": to, "candidate": c.candidate, "sdp_mid": c.sdp_mid, "sdp_mline_index": c.sdp_mline_index}),
            ),
            Self::Original => (
                "peer.ice_candidate",
                json!({"from": me, "to": to, "candidate": c.candidate, "sdp_mid": c.sdp_mid, "sdp_m_line_index": c.sdp_mline_index}),
            ),
            Self::Node => (
                "ice_candidate",
                json!({"to_peer_id": to, "candidate": c.candidate, "sdp_mid": c.sdp_mid, "sdp_mline_index": c.sdp_mline_index}),
            ),
        }
    }

    fn list(self) -> &'static str {
        match self {
            Self::Ours => "peer.list",
            Self::Original | Self::Node => "list_peers",
        }
    }

    /// Who sent a notification, where this dialect says it.
    fn sender(self, params: &Value) -> &str {
        let key = if self == Self::Node {
            "from_peer_id"
        } else {
            "from"
        };
        params[key].as_str().unwrap()
    }
}

/// What a browser-style call saw on its way to connected.
struct Call {
    peer: ClientPeer,
    offer_result: Value,
    /// The params of the answer notification (none when the answer was in the result).
    answer: Option<Value>,
    /// The params of every candidate notification.
    candidates: Vec<Value>,
}

/// A browser-style peer of `dialect` on `ws` (announced as `me`) offers to `to`, trickles
/// its candidates, takes the answer (from the result or a notification) and the remote
/// candidates, and returns once connected and trickled to.
async fn call(ws: &mut WsClient, dialect: Browser, me: &str, to: &str) -> Call {
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let sdp = peer.offer().await;
    let (method, params) = dialect.offer(me, to, &sdp);
    let offer_result = ws.call(method, params).await.unwrap();
    let (answer_method, candidate_method) = match dialect {
        Browser::Node => ("answer", "ice_candidate"),
        _ => ("peer.answer", "peer.ice_candidate"),
    };
    let mut call = Call {
        peer,
        offer_result,
        answer: None,
        candidates: Vec::new(),
    };
    let mut answered = false;
    if let Some(sdp) = call.offer_result["sdp"].as_str() {
        call.peer.accept_answer(sdp.to_owned()).await;
        answered = true;
    }
    // Candidates that come before the answer wait for it, as browsers make them.
    let mut early: VecDeque<pb::IceCandidateNotification> = VecDeque::new();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    // Until connected and the other side's trickled candidates came too: the answer carries
    // the server's candidates, so the call may connect before their trickle is read.
    while !call.peer.is_connected() || call.candidates.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("{dialect:?}: connecting to {to} timed out"),
            _ = call.peer.state.changed() => {}
            Some(candidate) = call.peer.candidates.recv() => {
                if let Some(init) = candidate {
                    let (method, params) = dialect.candidate(me, to, &init);
                    ws.call(method, params).await.unwrap();
                }
            }
            frame = next_frame(ws) => {
                assert!(frame.get("error").is_none(), "{dialect:?}: {frame}");
                let params = &frame["params"];
                if frame["method"] == answer_method {
                    assert_eq!(dialect.sender(params), to);
                    call.peer.accept_answer(params["sdp"].as_str().unwrap().to_owned()).await;
                    call.answer = Some(params.clone());
                    answered = true;
                } else if frame["method"] == candidate_method {
                    assert_eq!(dialect.sender(params), to);
                    call.candidates.push(params.clone());
                    let line = params.get("sdp_mline_index").or(params.get("sdp_m_line_index"));
                    early.push_back(pb::IceCandidateNotification {
                        from_peer_id: to.into(),
                        candidate: params["candidate"].as_str().unwrap().into(),
                        sdp_mid: params["sdp_mid"].as_str().unwrap_or_default().into(),
                        sdp_mline_index: line.and_then(Value::as_u64).unwrap_or(0) as u32,
                    });
                }
            }
        }
        while answered && !early.is_empty() {
            let candidate = early.pop_front().unwrap();
            call.peer.add_remote_candidate(&candidate).await;
        }
    }
    call
}

/// The next notification (or stray response) on `ws`.
async fn next_frame(ws: &mut WsClient) -> Value {
    match ws.notifications.pop_front() {
        Some(frame) => frame,
        None => ws.recv().await,
    }
}

async fn announce(url: &str, dialect: Browser, me: &str) -> (WsClient, Value) {
    let mut ws = WsClient::connect_to(url, None, None).await.unwrap();
    let (method, params) = dialect.announce(me);
    let ack = ws.call(method, params).await.unwrap();
    (ws, ack)
}

fn assert_tone(frequency: f32, what: &str) {
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "{what}: dominant frequency {frequency} Hz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_client_is_answered_in_its_shape_and_its_tone_comes_back() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/ws", server.http);
    let (mut ws, ack) = announce(&url, Browser::Original, "lfm2-browser").await;
    assert_eq!(ack["success"], true);
    assert_eq!(ack["other_peers"], json!([SERVER]));
    let list = ws.call("list_peers", json!({})).await.unwrap();
    assert_eq!(list["peers"][1]["peer_id"], "lfm2-browser");
    assert_eq!(list["peers"][1]["capabilities"], json!(["audio"]));
    assert_eq!(list["peers"][1]["metadata"]["app"], "lfm2");

    // A `from` that is not the announced id is refused, not taken as the sender.
    let (method, params) = Browser::Original.offer("someone-else", SERVER, FAKE_SDP);
    assert_eq!(ws.error_code(method, params).await, -32602);

    let call = call(&mut ws, Browser::Original, "lfm2-browser", SERVER).await;
    let result = &call.offer_result;
    assert_eq!(
        (&result["type"], &result["from"], &result["to"]),
        (&json!("answer"), &json!(SERVER), &json!("lfm2-browser"))
    );
    assert!(result["sdp"].as_str().unwrap().starts_with("v=0"));
    let candidate = call.candidates.first().expect("server candidates trickled");
    assert_eq!(candidate["to"], "lfm2-browser", "{candidate}");
    assert!(candidate["sdp_m_line_index"].is_u64(), "{candidate}");
    assert!(candidate.get("sdp_mline_index").is_none(), "{candidate}");
    assert_tone(call.peer.tone_round_trip(440.0).await, "original client");

    // The original's client disconnects by naming itself: its server session ends.
    let left = ws
        .call(
            "peer.disconnect",
            json!({"peer_id": "lfm2-browser", "reason": "bye"}),
        )
        .await
        .unwrap();
    assert_eq!(left, json!({"success": true, "peer_id": "lfm2-browser"}));
    assert_eq!(server.sessions.session_count(), 0);
    call.peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_client_gets_the_answer_as_a_notification_and_its_tone_comes_back() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/ws", server.http);
    let (mut ws, ack) = announce(&url, Browser::Node, "node-browser").await;
    assert_eq!(ack["peers_count"], 2);
    let call = call(&mut ws, Browser::Node, "node-browser", SERVER).await;
    let result = &call.offer_result;
    assert_eq!(result["to_peer_id"], SERVER);
    assert!(result["offer_id"].is_string());
    assert!(result.get("sdp").is_none(), "{result}");
    let answer = call.answer.as_ref().expect("an `answer` notification");
    assert_eq!(answer["type"], "answer");
    assert!(!call.candidates.is_empty());
    assert_tone(call.peer.tone_round_trip(440.0).await, "node client");
    assert_eq!(
        ws.call("disconnect", json!({"peer_id": SERVER}))
            .await
            .unwrap(),
        json!({"peer_id": SERVER})
    );
    assert_eq!(server.sessions.session_count(), 0);
    // As the Node server did, a disconnect from someone who is not there is acknowledged.
    assert_eq!(
        ws.call("disconnect", json!({"peer_id": "nobody"}))
            .await
            .unwrap(),
        json!({"peer_id": "nobody"})
    );
    call.peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_every_dialect_signal_each_other_each_in_its_own_shape() {
    let server = TestServer::start().await;
    let url = format!("ws://{}/ws", server.http);
    let (mut ours, _) = announce(&url, Browser::Ours, "ours").await;
    let (mut original, _) = announce(&url, Browser::Original, "orig").await;
    let joined = ours.expect_notification("peer.joined").await;
    assert_eq!(joined["peer_id"], "orig");
    assert_eq!(joined["capabilities"]["audio"], true);
    let (mut node, _) = announce(&url, Browser::Node, "node").await;
    let joined = original.expect_notification("peer.joined").await;
    assert_eq!(
        (&joined["peer_id"], &joined["capabilities"]),
        (&json!("node"), &json!(["audio"]))
    );
    let joined = ours.expect_notification("peer.joined").await;
    assert_eq!(joined["peer_id"], "node");
    let list = node.call("list_peers", json!({})).await.unwrap();
    assert_eq!(list["count"], 4);
    assert_eq!(list["peers"][2]["capabilities"]["audio"], true);

    // The original's client offers to the Node client...
    let offered = original
        .call(
            "peer.offer",
            json!({"from": "orig", "to": "node", "sdp": FAKE_SDP}),
        )
        .await
        .unwrap();
    assert_eq!(offered["success"], true);
    assert_eq!(offered["to_peer_id"], "node");
    let offer = node.expect_notification("offer").await;
    assert_eq!(
        (&offer["from_peer_id"], &offer["type"], &offer["sdp"]),
        (&json!("orig"), &json!("offer"), &json!(FAKE_SDP))
    );
    assert_eq!(offer["offer_id"], offered["offer_id"]);
    // ...which answers and trickles in its own dialect...
    let answered = node
        .call(
            "answer",
            json!({"to_peer_id": "orig", "sdp": FAKE_SDP, "type": "answer"}),
        )
        .await
        .unwrap();
    assert_eq!(answered, json!({"to_peer_id": "orig"}));
    let candidate = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host";
    node.call(
        "ice_candidate",
        json!({"to_peer_id": "orig", "candidate": candidate, "sdp_mid": "0", "sdp_mline_index": 0}),
    )
    .await
    .unwrap();
    // ...and the original's client reads both in its own.
    let answer = original.expect_notification("peer.answer").await;
    assert_eq!(
        (&answer["from"], &answer["to"]),
        (&json!("node"), &json!("orig"))
    );
    let got = original.expect_notification("peer.ice_candidate").await;
    assert_eq!(
        got,
        json!({"from": "node", "to": "orig", "candidate": candidate, "sdp_mid": "0", "sdp_m_line_index": 0})
    );
    original
        .call(
            "peer.disconnect",
            json!({"peer_id": "node", "reason": "done"}),
        )
        .await
        .unwrap();
    let gone = node.expect_notification("peer_disconnected").await;
    assert_eq!(gone, json!({"peer_id": "orig"}));

    // Leaving (a close frame): each hears it in its own words.
    node.socket.close(None).await.unwrap();
    assert_eq!(
        original.expect_notification("peer.left").await["peer_id"],
        "node"
    );
    assert_eq!(
        ours.expect_notification("peer.left").await["peer_id"],
        "node"
    );
    server.stop().await;
}

/// A `--mode websocket` peer with `dialect` joining `url` as `peer_id`.
async fn join(url: String, dialect: DialectChoice, peer_id: &str) -> Joined {
    let mut config = Config::local_test();
    config.mode = Mode::Websocket;
    config.signaling_url = Some(url);
    config.peer_id = Some(peer_id.into());
    config.signaling_dialect = dialect;
    let peer = WebSocketPeer::bind(&config).await.unwrap();
    let sessions = peer.sessions();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(peer.run(async move {
        let _ = stopped.await;
    }));
    Joined {
        sessions,
        stop,
        task,
    }
}

struct Joined {
    sessions: std::sync::Arc<remotemedia_webrtc::peer::SessionManager>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), remotemedia_webrtc::Error>>,
}

impl Joined {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `--mode websocket --signaling-dialect <choice>` joins a small server of `kind`; a
/// browser-style peer of that dialect calls it there and gets its tone back.
async fn joins_a_server_of_the_original(kind: Kind, choice: DialectChoice) {
    common::init_tracing();
    let server = DialectServer::start(kind).await;
    let b = join(server.url(), choice, "remotemedia-b").await;
    let relay = &server;
    common::eventually(
        "B announced",
        || async move { relay.has_peer("remotemedia-b") },
    )
    .await;
    let browser = match kind {
        Kind::Original => Browser::Original,
        Kind::Node => Browser::Node,
    };
    let (mut ws, ack) = announce(&server.url(), browser, "caller").await;
    assert_eq!(ack["other_peers"], json!(["remotemedia-b"]));
    let list = ws.call(browser.list(), json!({})).await.unwrap();
    let b_entry = &list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == "remotemedia-b")
        .unwrap()["capabilities"];
    match kind {
        Kind::Original => assert_eq!(b_entry, &json!(["audio", "video", "data"])),
        Kind::Node => assert_eq!(b_entry["audio"], true),
    }
    let call = call(&mut ws, browser, "caller", "remotemedia-b").await;
    assert!(call.answer.is_some(), "B answered with a notification");
    assert!(!call.candidates.is_empty(), "B trickled its candidates");
    assert_eq!(b.sessions.session_count(), 1);
    assert_tone(
        call.peer.tone_round_trip(440.0).await,
        &format!("{kind:?} server, {choice:?}"),
    );
    call.peer.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mode_joins_an_original_server() {
    joins_a_server_of_the_original(Kind::Original, DialectChoice::Original).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mode_joins_a_node_server() {
    joins_a_server_of_the_original(Kind::Node, DialectChoice::Node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mode_auto_joins_an_original_server() {
    joins_a_server_of_the_original(Kind::Original, DialectChoice::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mode_auto_falls_back_to_the_node_dialect() {
    joins_a_server_of_the_original(Kind::Node, DialectChoice::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_mode_in_this_server_s_dialect_joins_this_server() {
    common::init_tracing();
    let server = TestServer::start().await;
    let url = format!("ws://{}/ws", server.http);
    let b = join(url.clone(), DialectChoice::Remotemedia, "remotemedia-b").await;
    let (mut ws, _) = announce(&url, Browser::Ours, "caller").await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let list = ws.call("peer.list", json!({})).await.unwrap();
        if list["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == "remotemedia-b")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B never announced");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let call = call(&mut ws, Browser::Ours, "caller", "remotemedia-b").await;
    assert_eq!(b.sessions.session_count(), 1);
    assert_eq!(server.sessions.session_count(), 0, "A holds no media");
    assert_tone(
        call.peer.tone_round_trip(440.0).await,
        "remotemedia dialect",
    );
    call.peer.close().await;
    b.stop().await;
    server.stop().await;
}
