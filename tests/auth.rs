//! `--auth-secret`: no stream or WebSocket without a valid token, a token announces only its
//! own peer id, and each refusal carries its code.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::websocket::WsClient;
use common::{http_get, metric_value, TestServer};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use remotemedia_webrtc::config::Secret;
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};
use remotemedia_webrtc::signaling::{issue_token, jsonrpc, Claims, TokenVerifier};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

const SECRET: &str = "a-test-secret-of-reasonable-length";

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.auth.auth_secret = Some(Secret::new(SECRET));
    })
    .await
}

fn token(peer_id: &str) -> String {
    issue_token(
        SECRET.as_bytes(),
        peer_id,
        Duration::from_secs(300),
        None,
        None,
    )
    .unwrap()
}

fn expired_token(peer_id: &str) -> String {
    let claims = Claims {
        sub: peer_id.into(),
        exp: 1_000_000,
        room: None,
        manifest: None,
        room_manifest: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn refusals(server: &TestServer, reason: &str) -> f64 {
    let exposition = http_get(server.http, "/metrics").await;
    metric_value(
        &exposition,
        &format!("remotemedia_auth_refusals_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("auth refusals for {reason} are exported"))
}

fn announce(peer_id: &str, metadata: HashMap<String, String>) -> Req {
    Req::Announce(pb::AnnounceRequest {
        peer_id: peer_id.into(),
        metadata,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_stream_without_a_valid_token_is_unauthenticated() {
    let server = server().await;
    let url = server.grpc_url();
    let missing_before = refusals(&server, "missing").await;

    let status = SignalingClient::open_with_token(&url, None)
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(refusals(&server, "missing").await > missing_before);

    let forged = issue_token(
        b"another-secret",
        "alice",
        Duration::from_secs(60),
        None,
        None,
    )
    .unwrap();
    let status = SignalingClient::open_with_token(&url, Some(&forged))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = SignalingClient::open_with_token(&url, Some("not-a-jwt"))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = SignalingClient::open_with_token(&url, Some(&expired_token("alice")))
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{status:?}");
    assert!(refusals(&server, "expired").await >= 1.0);

    // The peer list is for signed-in clients; the health check stays open for probes.
    let mut client = SignalingClient::open_with_token(&url, Some(&token("alice")))
        .await
        .unwrap();
    let status = client
        .grpc
        .get_peers(pb::GetPeersRequest {})
        .await
        .err()
        .unwrap();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(client.health().await.status, "healthy");
}

#[tokio::test]
async fn a_token_announces_only_its_own_peer_id() {
    let server = server().await;
    let url = server.grpc_url();
    let before = refusals(&server, "wrong_peer").await;
    let mut client = SignalingClient::open_with_token(&url, Some(&token("bob")))
        .await
        .unwrap();
    client.send(announce("alice", HashMap::new())).await;
    let status = client.expect_status().await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(refusals(&server, "wrong_peer").await > before);

    // The same token announcing its own id is in.
    let mut client = SignalingClient::open_with_token(&url, Some(&token("bob")))
        .await
        .unwrap();
    let id = client.send(announce("bob", HashMap::new())).await;
    let ack = client.expect_ack(&id).await;
    assert_eq!(ack["peer_id"], "bob");
}

#[tokio::test]
async fn a_manifest_claim_pins_the_manifest_and_a_room_claim_sets_the_room() {
    let server = server().await;
    let url = server.grpc_url();
    let pinned = issue_token(
        SECRET.as_bytes(),
        "carol",
        Duration::from_secs(60),
        Some("room-7".into()),
        Some("vad".into()),
    )
    .unwrap();
    let mut client = SignalingClient::open_with_token(&url, Some(&pinned))
        .await
        .unwrap();
    client
        .send(announce(
            "carol",
            HashMap::from([("manifest".into(), "loopback".into())]),
        ))
        .await;
    assert_eq!(client.expect_status().await.code(), Code::PermissionDenied);
    assert!(refusals(&server, "wrong_manifest").await >= 1.0);

    // Another room than the claim's is refused (it was silently replaced before rooms).
    let mut client = SignalingClient::open_with_token(&url, Some(&pinned))
        .await
        .unwrap();
    client
        .send(announce(
            "carol",
            HashMap::from([("room".into(), "elsewhere".into())]),
        ))
        .await;
    assert_eq!(client.expect_status().await.code(), Code::PermissionDenied);
    assert!(refusals(&server, "wrong_room").await >= 1.0);

    let mut client = SignalingClient::open_with_token(&url, Some(&pinned))
        .await
        .unwrap();
    let id = client.send(announce("carol", HashMap::new())).await;
    client.expect_ack(&id).await;
    let peers = client.grpc.clone();
    let mut request = tonic::Request::new(pb::GetPeersRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {pinned}").parse().unwrap());
    let list = { peers }.get_peers(request).await.unwrap().into_inner();
    let carol = list.peers.iter().find(|p| p.peer_id == "carol").unwrap();
    assert_eq!(
        carol.metadata.get("room").map(String::as_str),
        Some("room-7")
    );
    assert_eq!(
        carol.metadata.get("manifest").map(String::as_str),
        Some("vad")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_valid_token_a_call_carries_audio() {
    let server = server().await;
    let mut signaling = SignalingClient::open_with_token(&server.grpc_url(), Some(&token("dave")))
        .await
        .unwrap();
    let id = signaling.send(announce("dave", HashMap::new())).await;
    signaling.expect_ack(&id).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let frequency = peer.tone_round_trip(440.0).await;
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "came back at {frequency} Hz"
    );
    peer.close().await;
}

/// The first text frame of a refused WebSocket: a JSON-RPC error, then the close.
async fn refusal_code(mut client: WsClient) -> (i64, Option<u16>) {
    let error = client.recv().await;
    assert!(error["id"].is_null());
    let code = error["error"]["code"].as_i64().unwrap();
    let close = loop {
        match client.socket.next().await {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    (code, close)
}

#[tokio::test]
async fn websockets_need_a_token_in_the_query_or_the_subprotocol() {
    let server = server().await;
    let base = format!("ws://{}/ws", server.http);

    let refused = WsClient::connect_to(&base, None, None).await.unwrap();
    let (code, close) = refusal_code(refused).await;
    assert_eq!(code, i64::from(jsonrpc::UNAUTHENTICATED));
    assert_eq!(close, Some(1008));

    let expired = format!("{base}?access_token={}", expired_token("erin"));
    let (code, _) = refusal_code(WsClient::connect_to(&expired, None, None).await.unwrap()).await;
    assert_eq!(code, i64::from(jsonrpc::UNAUTHENTICATED));

    // The query token: in, but only as its own peer id.
    let url = format!("{base}?access_token={}", token("erin"));
    let mut client = WsClient::connect_to(&url, None, None).await.unwrap();
    let code = client
        .error_code("peer.announce", json!({"peer_id": "mallory"}))
        .await;
    assert_eq!(code, i64::from(jsonrpc::PERMISSION_DENIED));
    let result = client
        .call("peer.announce", json!({"peer_id": "erin"}))
        .await
        .unwrap();
    assert_eq!(result["peer_id"], "erin");

    // The subprotocol token (browsers cannot set headers): the server selects remotemedia.v1.
    let protocols = format!("remotemedia.v1, bearer.{}", token("frank"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            base.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocols.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "remotemedia.v1"
    );
    drop(socket);
    let mut client = WsClient::connect_to(&base, None, Some(&protocols))
        .await
        .unwrap();
    let result = client
        .call("peer.announce", json!({"peer_id": "frank"}))
        .await
        .unwrap();
    assert_eq!(result["peer_id"], "frank");
}

#[tokio::test]
async fn the_token_command_prints_a_token_the_server_accepts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args([
            "token",
            "--peer-id",
            "gina",
            "--ttl",
            "120",
            "--auth-secret",
            SECRET,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.lines().last().unwrap();
    let claims = TokenVerifier::new(SECRET.as_bytes())
        .verify(Some(token))
        .unwrap();
    assert_eq!(claims.sub, "gina");

    // The secret may come from a file (a mounted Kubernetes Secret) instead.
    let dir = std::env::temp_dir().join(format!("rm-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let server = TestServer::start_with(|config| {
        config.auth.auth_secret_file = Some(file.clone());
    })
    .await;
    let mut client = SignalingClient::open_with_token(&server.grpc_url(), Some(token))
        .await
        .unwrap();
    let id = client.send(announce("gina", HashMap::new())).await;
    client.expect_ack(&id).await;
    assert_eq!(
        SignalingClient::open_with_token(&server.grpc_url(), None)
            .await
            .err()
            .unwrap()
            .code(),
        Code::Unauthenticated
    );

    // `--help` never prints the secrets from the environment.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .arg("--help")
        .env("REMOTEMEDIA_AUTH_SECRET", SECRET)
        .env("REMOTEMEDIA_WORKER_TOKEN", "worker-token-value")
        .env("REMOTEMEDIA_TURN_SECRET", "turn-secret-value")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("REMOTEMEDIA_AUTH_SECRET"));
    for secret in [SECRET, "worker-token-value", "turn-secret-value"] {
        assert!(!help.contains(secret), "--help shows a secret");
    }

    // Without a secret the command says what is missing.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(["token", "--peer-id", "gina"])
        .env_remove("REMOTEMEDIA_AUTH_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--auth-secret"));
    let _ = std::fs::remove_dir_all(dir);
}
