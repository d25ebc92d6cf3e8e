//! The WebSocket JSON-RPC dialect of DESIGN.md §2: every method, every error code a single
//! process can produce, the Origin check, shutdown, and a gRPC client and a WebSocket client
//! talking to each other through one server.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use common::client::{ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::websocket::WsClient;
use common::TestServer;
use futures::{SinkExt, StreamExt};
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_request::Request as Req,
};
use remotemedia_webrtc::signaling::SessionHost;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SERVER: &str = "remotemedia-server";
/// Enough SDP for the core's structural check; forwarded SDP is not parsed.
const FAKE_SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_list_and_info() {
    let server = TestServer::start().await;
    let (mut ws, announced) = WsClient::announce(server.http, "ws-a").await;
    let token = announced["resume_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(token.len(), 32, "{announced}");
    assert_eq!(
        announced,
        json!({"peer_id": "ws-a", "peers_count": 2, "other_peers": [SERVER], "resume_token": token, "ice_servers": []})
    );
    let list = ws.call("peer.list", json!({})).await.unwrap();
    assert_eq!(list["count"], 2);
    assert_eq!(list["peers"][0]["peer_id"], SERVER);
    assert_eq!(list["peers"][1]["peer_id"], "ws-a");
    assert_eq!(list["peers"][1]["state"], "available");
    assert_eq!(list["peers"][1]["metadata"]["transport"], "ws");
    let info = ws.call("server.info", json!({})).await.unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["connected_peers"], 1);
    assert!(info["uptime_seconds"].is_u64());

    // A request without an id is a JSON-RPC notification: executed, never answered.
    ws.send_text(json!({"jsonrpc": "2.0", "method": "server.info"}).to_string())
        .await;
    let id = ws.request("server.info", json!({})).await;
    ws.response(json!(id)).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reachable_error_code() {
    let server = TestServer::start_with(|c| c.limits.max_peers = 2).await;
    let mut ws = WsClient::connect(server.http).await;

    ws.send_text("{not json".into()).await;
    assert_eq!(ws.response(json!(null)).await.unwrap_err().0, -32700);
    ws.send_text("[]".into()).await;
    assert_eq!(ws.response(json!(null)).await.unwrap_err().0, -32600);
    ws.send_text(json!({"id": 7, "method": "server.info"}).to_string())
        .await;
    assert_eq!(ws.response(json!(7)).await.unwrap_err().0, -32600);
    ws.socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(ws.response(json!(null)).await.unwrap_err().0, -32600);
    let huge = "x".repeat(300 * 1024);
    ws.send_text(
        json!({"jsonrpc": "2.0", "id": 8, "method": "server.info", "params": {"pad": huge}})
            .to_string(),
    )
    .await;
    assert_eq!(ws.response(json!(null)).await.unwrap_err().0, -32600);
    assert_eq!(ws.error_code("peer.dance", json!({})).await, -32601);
    assert_eq!(
        ws.error_code("peer.answer", json!({"to": "x", "sdp": "v=0"}))
            .await,
        -32006
    );
    assert_eq!(ws.error_code("peer.announce", json!({})).await, -32602);
    assert_eq!(
        ws.error_code("peer.announce", json!({"peer_id": "bad id!"}))
            .await,
        -32602
    );
    assert_eq!(
        ws.error_code("peer.announce", json!({"peer_id": SERVER}))
            .await,
        -32001
    );

    // Announce failures leave the socket open for another try.
    ws.call("peer.announce", json!({"peer_id": "errors"}))
        .await
        .unwrap();
    assert_eq!(
        ws.error_code("peer.announce", json!({"peer_id": "again"}))
            .await,
        -32600
    );
    let mut twin = WsClient::connect(server.http).await;
    assert_eq!(
        twin.error_code("peer.announce", json!({"peer_id": "errors"}))
            .await,
        -32001
    );
    twin.call("peer.announce", json!({"peer_id": "second"}))
        .await
        .unwrap();
    let mut third = WsClient::connect(server.http).await;
    assert_eq!(
        third
            .error_code("peer.announce", json!({"peer_id": "third"}))
            .await,
        -32005
    );

    assert_eq!(
        ws.error_code("peer.offer", json!({"to": "nobody", "sdp": FAKE_SDP}))
            .await,
        -32000
    );
    assert_eq!(
        ws.error_code("peer.offer", json!({"to": "second"})).await,
        -32602
    );
    assert_eq!(
        ws.error_code("peer.offer", json!({"to": "second", "sdp": "hello"}))
            .await,
        -32002
    );
    assert_eq!(
        ws.error_code("peer.offer", json!({"to": SERVER, "sdp": "v=0\r\nm=x\r\n"}))
            .await,
        -32002
    );
    assert_eq!(
        ws.error_code("peer.answer", json!({"to": "second", "sdp": "hello"}))
            .await,
        -32003
    );
    let bad = json!({"to": "second", "candidate": "host 1.2.3.4", "sdp_mid": "0"});
    assert_eq!(ws.error_code("peer.ice_candidate", bad).await, -32004);
    assert_eq!(
        ws.error_code("peer.disconnect", json!({"to": SERVER}))
            .await,
        -32000
    );
    assert_eq!(
        ws.error_code("peer.disconnect", json!({"to": "nobody"}))
            .await,
        -32000
    );

    // After all that the connection still serves.
    assert_eq!(
        ws.call("server.info", json!({})).await.unwrap()["connected_peers"],
        2
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_are_checked_against_allowed_origins() {
    let server = TestServer::start().await;
    let same = format!("http://{}", server.http);
    assert!(WsClient::connect_with_origin(server.http, Some(&same))
        .await
        .is_ok());
    assert!(WsClient::connect_with_origin(server.http, None)
        .await
        .is_ok());
    let refused = WsClient::connect_with_origin(server.http, Some("https://evil.example")).await;
    assert_forbidden(refused.err());
    server.stop().await;

    let server = TestServer::start_with(|c| {
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    assert!(
        WsClient::connect_with_origin(server.http, Some("https://app.example"))
            .await
            .is_ok()
    );
    let refused = WsClient::connect_with_origin(server.http, Some("https://evil.example")).await;
    assert_forbidden(refused.err());
    server.stop().await;

    let server = TestServer::start_with(|c| c.allowed_origins = vec!["*".into()]).await;
    assert!(
        WsClient::connect_with_origin(server.http, Some("https://evil.example"))
            .await
            .is_ok()
    );
    server.stop().await;
}

fn assert_forbidden(err: Option<tokio_tungstenite::tungstenite::Error>) {
    match err {
        Some(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_to_the_server_answers_in_the_result_and_connects() {
    let server = TestServer::start().await;
    let (mut ws, _) = WsClient::announce(server.http, "ws-media").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = peer.offer().await;
    let result = ws
        .call("peer.offer", json!({"to": SERVER, "sdp": offer}))
        .await
        .unwrap();
    assert_eq!(result["type"], "answer");
    assert!(result["offer_id"].as_str().unwrap().len() >= 32);
    peer.accept_answer(result["sdp"].as_str().unwrap().to_owned())
        .await;
    loop {
        tokio::select! {
            Some(candidate) = peer.candidates.recv() => {
                let init = candidate.unwrap_or_default();
                ws.call("peer.ice_candidate", json!({
                    "to": SERVER, "candidate": init.candidate,
                    "sdp_mid": init.sdp_mid, "sdp_mline_index": init.sdp_mline_index,
                })).await.unwrap();
            }
            params = ws.expect_notification("peer.ice_candidate") => {
                assert_eq!(params["from"], SERVER);
                peer.add_remote_candidate(&pb::IceCandidateNotification {
                    from_peer_id: SERVER.into(),
                    candidate: params["candidate"].as_str().unwrap().into(),
                    sdp_mid: params["sdp_mid"].as_str().unwrap_or_default().into(),
                    sdp_mline_index: params["sdp_mline_index"].as_u64().unwrap() as u32,
                }).await;
            }
            _ = peer.state.changed() => {}
        }
        if peer.is_connected() {
            break;
        }
    }
    assert_eq!(server.sessions.session_count(), 1);
    assert_eq!(
        ws.call("peer.disconnect", json!({"to": SERVER}))
            .await
            .unwrap(),
        json!({})
    );
    assert_eq!(server.sessions.session_count(), 0);
    peer.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_and_a_websocket_client_signal_each_other() {
    let server = TestServer::start().await;
    let (mut grpc, _) = SignalingClient::announce(&server.grpc_url(), "grpc-1").await;
    let (mut ws, announced) = WsClient::announce(server.http, "ws-1").await;
    assert_eq!(announced["other_peers"], json!([SERVER, "grpc-1"]));
    let joined = grpc
        .expect_notification(|n| match n {
            Notification::PeerJoined(j) => Some(j.clone()),
            _ => None,
        })
        .await;
    assert_eq!(joined.peer_id, "ws-1");
    assert!(joined.capabilities.unwrap().audio);
    let (mut grpc2, _) = SignalingClient::announce(&server.grpc_url(), "grpc-2").await;
    let joined = ws.expect_notification("peer.joined").await;
    assert_eq!(joined["peer_id"], "grpc-2");
    assert_eq!(joined["metadata"]["test"], "yes");

    // WebSocket offers, gRPC answers; candidates both ways.
    let offer = ws
        .call("peer.offer", json!({"to": "grpc-2", "sdp": FAKE_SDP}))
        .await
        .unwrap();
    let offer_id = offer["offer_id"].as_str().unwrap().to_owned();
    let got = grpc2
        .expect_notification(|n| match n {
            Notification::Offer(o) => Some(o.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (got.from_peer_id.as_str(), got.offer_id.as_str()),
        ("ws-1", offer_id.as_str())
    );
    let id = grpc2
        .send(Req::Answer(pb::AnswerRequest {
            to_peer_id: "ws-1".into(),
            sdp: FAKE_SDP.into(),
            r#type: "answer".into(),
            offer_id: None,
        }))
        .await;
    grpc2.expect_ack(&id).await;
    let answer = ws.expect_notification("peer.answer").await;
    assert_eq!(answer, json!({"from": "grpc-2", "sdp": FAKE_SDP}));

    let candidate = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";
    let sent =
        json!({"to": "grpc-2", "candidate": candidate, "sdp_mid": "0", "sdp_mline_index": 0});
    assert_eq!(
        ws.call("peer.ice_candidate", sent).await.unwrap(),
        json!({})
    );
    let got = grpc2
        .expect_notification(|n| match n {
            Notification::IceCandidate(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (
            got.from_peer_id.as_str(),
            got.candidate.as_str(),
            got.sdp_mid.as_str()
        ),
        ("ws-1", candidate, "0")
    );
    let id = grpc2
        .send(Req::IceCandidate(pb::IceCandidateRequest {
            to_peer_id: "ws-1".into(),
            candidate: candidate.into(),
            sdp_mid: String::new(),
            sdp_mline_index: 0,
        }))
        .await;
    grpc2.expect_ack(&id).await;
    let got = ws.expect_notification("peer.ice_candidate").await;
    assert_eq!(
        got,
        json!({"from": "grpc-2", "candidate": candidate, "sdp_mid": null, "sdp_mline_index": 0})
    );

    // gRPC offers, WebSocket answers.
    let id = grpc2.offer("ws-1", FAKE_SDP).await;
    grpc2.expect_ack(&id).await;
    let got = ws.expect_notification("peer.offer").await;
    assert_eq!(got["from"], "grpc-2");
    assert!(got["offer_id"].is_string());
    ws.call("peer.answer", json!({"to": "grpc-2", "sdp": FAKE_SDP}))
        .await
        .unwrap();
    let got = grpc2
        .expect_notification(|n| match n {
            Notification::Answer(a) => Some(a.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got.from_peer_id, "ws-1");

    // Disconnect and leave reach the WebSocket client.
    ws.call("peer.disconnect", json!({"to": "grpc-2"}))
        .await
        .unwrap();
    let got = grpc2
        .expect_notification(|n| match n {
            Notification::PeerDisconnected(d) => Some(d.peer_id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, "ws-1");
    grpc2.close();
    assert_eq!(
        ws.expect_notification("peer.left").await,
        json!({"peer_id": "grpc-2"})
    );
    ws.socket.close(None).await.unwrap();
    let left = grpc
        .expect_notification(|n| match n {
            Notification::PeerLeft(l) if l.peer_id == "ws-1" => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(left, ());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_a_close_frame() {
    let server = TestServer::start().await;
    let (mut ws, _) = WsClient::announce(server.http, "ws-bye").await;
    let stopping = tokio::spawn(server.stop());
    let close = loop {
        match tokio::time::timeout(common::WAIT, ws.socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.unwrap().code), 1001);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_breaks_resumes_with_its_token_and_gets_what_it_missed() {
    // Without takeover, so that the id is taken during the grace (the default lets a socket
    // without the token take it over: tests/id_takeover.rs).
    let server = TestServer::start_with(|c| c.limits.id_takeover = false).await;
    let (ws, announced) = WsClient::announce(server.http, "browser").await;
    let token = announced["resume_token"].as_str().unwrap().to_owned();
    let (mut other, _) = WsClient::announce(server.http, "other").await;
    // The socket drops without a close frame (a tab's network goes away).
    drop(ws);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for i in 0..5 {
        let candidate = format!(
            "candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host",
            9000 + i
        );
        other
            .call("peer.ice_candidate", json!({"to": "browser", "candidate": candidate, "sdp_mid": "0", "sdp_mline_index": 0}))
            .await
            .unwrap();
    }
    let mut impostor = WsClient::connect(server.http).await;
    let code = impostor
        .error_code("peer.announce", json!({"peer_id": "browser"}))
        .await;
    assert_eq!(code, -32001, "the id is taken during the grace");

    let mut back = WsClient::connect(server.http).await;
    back.call(
        "peer.announce",
        json!({"peer_id": "browser", "resume_token": token}),
    )
    .await
    .unwrap();
    for i in 0..5 {
        let candidate = back.expect_notification("peer.ice_candidate").await;
        assert_eq!(candidate["from"], "other");
        assert!(
            candidate["candidate"]
                .as_str()
                .unwrap()
                .starts_with(&format!("candidate:{i} ")),
            "in order: {candidate}"
        );
    }
    let seen: Vec<&Value> = other.notifications.iter().collect();
    assert!(
        !seen.iter().any(|n| n["method"] == "peer.left"),
        "no peer.left during a resume: {seen:?}"
    );
}
