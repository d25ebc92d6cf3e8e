//! One WebSocket text frame into the JSON-RPC handler, against an in-memory signaling core:
//! once on a fresh connection, once on a connection that has announced. Every answer must be
//! a JSON-RPC 2.0 response with a code of the dialect, and every connection must leave no
//! registration behind when it closes.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use remotemedia_webrtc::fuzzing::WebSocketConnection;
use remotemedia_webrtc::signaling::{ConnectedPeer, Identity, SignalingCore};
use remotemedia_webrtc_fuzz::{announce, drain, runtime, signaling_core, AnsweringHost};
use serde_json::Value;
use tokio::sync::Mutex;

struct Harness {
    core: Arc<SignalingCore>,
    /// Another client, so offers, answers and candidates have someone to go to.
    bob: Mutex<ConnectedPeer>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        runtime().block_on(async {
            let core = signaling_core(Arc::new(AnsweringHost::default()));
            let bob = announce(&core, "bob").await;
            Harness {
                core,
                bob: Mutex::new(bob),
            }
        })
    })
}

/// -32700..-32600 (JSON-RPC) and -32000..-32009 (the dialect, docs/signaling.md).
fn known_code(code: i64) -> bool {
    matches!(code, -32700 | -32600 | -32601 | -32602 | -32603) || (-32009..=-32000).contains(&code)
}

/// Checks one answer: a JSON object, `"jsonrpc":"2.0"`, an `id`, and exactly one of `result`
/// or `error` (with a known code and a message).
fn check_answer(frame: &str, answer: &str) {
    let value: Value = serde_json::from_str(answer)
        .unwrap_or_else(|err| panic!("answer to {frame:?} is not JSON ({err}): {answer}"));
    assert_eq!(value["jsonrpc"], "2.0", "{answer}");
    assert!(value.get("id").is_some(), "no id: {answer}");
    match (value.get("result"), value.get("error")) {
        (Some(_), None) => {}
        (None, Some(error)) => {
            let code = error["code"].as_i64().unwrap_or(0);
            assert!(
                known_code(code),
                "code {code} is not of the dialect: {answer}"
            );
            assert!(error["message"].is_string(), "{answer}");
        }
        _ => panic!("not exactly one of result and error: {answer}"),
    }
}

async fn connection(harness: &Harness, announced: bool, frame: &str) {
    let mut connection = WebSocketConnection::new(Arc::clone(&harness.core), Identity::Anonymous);
    if announced {
        let announce =
            r#"{"jsonrpc":"2.0","id":0,"method":"peer.announce","params":{"peer_id":"alice"}}"#;
        let answer = connection.text_frame(announce).await.expect("an answer");
        assert!(
            answer.contains("\"result\""),
            "alice did not announce: {answer}"
        );
    }
    if let Some(answer) = connection.text_frame(frame).await {
        check_answer(frame, &answer);
    }
    if let Some(peer) = connection.peer() {
        drain(peer);
    }
    connection.close().await;
}

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 (the WebSocket layer refuses others before the handler).
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    let harness = harness();
    runtime().block_on(async {
        connection(harness, false, frame).await;
        connection(harness, true, frame).await;
        drain(&mut *harness.bob.lock().await);
        let stats = harness.core.stats().await;
        assert_eq!(
            stats.connected_peers, 1,
            "a closed connection stayed registered"
        );
        assert_eq!(
            stats.sessions, 0,
            "a closed connection kept its server session"
        );
    });
});
