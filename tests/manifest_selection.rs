//! A client picks its pipeline by name (announce metadata `manifest`) from `--manifest-dir`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::{SignalingClient, SERVER};
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::proto::common::{data_buffer::DataType, DataBuffer, JsonData};
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};
use tonic::Code;

fn manifest_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rm-manifest-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("calc.yaml"),
        "version: v1\nmetadata: {name: calc}\nnodes:\n  - {id: calc, node_type: CalculatorNode}\nconnections: []\n",
    )
    .unwrap();
    dir
}

async fn ask(peer: &mut ClientPeer, payload: &str) -> DataBuffer {
    let channel = peer.data.clone().unwrap();
    common::eventually("the data channel to open", || {
        let open = channel.ready_state()
            == webrtc::data_channel::data_channel_state::RTCDataChannelState::Open;
        async move { open }
    })
    .await;
    let request = DataBuffer {
        data_type: Some(DataType::Json(JsonData {
            json_payload: payload.into(),
            schema_type: String::new(),
        })),
        metadata: Default::default(),
    };
    channel
        .send(&bytes::Bytes::from(request.encode_to_vec()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(common::WAIT, peer.messages.recv())
        .await
        .expect("a reply on the data channel")
        .unwrap();
    DataBuffer::decode(reply).unwrap()
}

fn json_of(buffer: &DataBuffer) -> serde_json::Value {
    match &buffer.data_type {
        Some(DataType::Json(json)) => serde_json::from_str(&json.json_payload).unwrap(),
        other => panic!("expected JSON, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_runs_the_pipeline_it_names() {
    common::init_tracing();
    let dir = manifest_dir();
    let server = TestServer::start_with(|c| c.manifest_dir = Some(dir.clone())).await;
    let question = r#"{"operation":"multiply","operands":[6,7]}"#;

    let metadata = HashMap::from([("manifest".to_owned(), "calc".to_owned())]);
    let (mut calc_signaling, _) =
        SignalingClient::announce_with(&server.grpc_url(), "calc-user", metadata).await;
    let mut calc_peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut calc_signaling, &mut calc_peer).await;
    let answer = json_of(&ask(&mut calc_peer, question).await);
    assert_eq!(answer["result"], 42.0, "{answer}");
    assert_eq!(answer["operation"], "multiply");
    let exposition = common::http_get(server.http, "/metrics").await;
    let timed = common::metric_value(
        &exposition,
        r#"remotemedia_pipeline_node_seconds_count{node_type="CalculatorNode"}"#,
    );
    assert_eq!(timed, Some(1.0), "the node's latency is exported");

    // No name: the default (loopback) echoes the question unchanged.
    let (mut echo_signaling, _) = SignalingClient::announce(&server.grpc_url(), "echo-user").await;
    let mut echo_peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut echo_signaling, &mut echo_peer).await;
    let echoed = ask(&mut echo_peer, question).await;
    assert!(matches!(&echoed.data_type, Some(DataType::Json(j)) if j.json_payload == question));

    calc_peer.close().await;
    echo_peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_manifest_name_is_invalid_argument() {
    let dir = manifest_dir();
    let server = TestServer::start_with(|c| c.manifest_dir = Some(dir.clone())).await;
    let metadata = HashMap::from([("manifest".to_owned(), "nope".to_owned())]);
    let (mut signaling, _) =
        SignalingClient::announce_with(&server.grpc_url(), "lost", metadata).await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    let error = signaling.expect_error(&offer).await;
    assert_eq!(error.code, Code::InvalidArgument as u32);
    assert!(
        error.message.contains("nope") && error.message.contains("calc"),
        "{error:?}"
    );
    peer.close().await;
}

#[tokio::test]
async fn a_manifest_name_that_is_not_a_plain_name_is_refused_at_announce() {
    let dir = manifest_dir();
    let server = TestServer::start_with(|c| c.manifest_dir = Some(dir.clone())).await;
    let long = "a".repeat(65);
    for name in ["../calc", "/etc/passwd", "calc.yaml", "", long.as_str()] {
        let mut signaling = SignalingClient::open(&server.grpc_url()).await;
        signaling
            .send(Req::Announce(pb::AnnounceRequest {
                peer_id: "curious".into(),
                metadata: HashMap::from([("manifest".to_owned(), name.to_owned())]),
                ..Default::default()
            }))
            .await;
        let status = signaling.expect_status().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
        assert!(status.message().contains("[A-Za-z0-9_-]"), "{status:?}");
    }
    // A plain name still works (and the peer id was never taken by the refusals).
    let metadata = HashMap::from([("manifest".to_owned(), "calc".to_owned())]);
    let (_signaling, ack) =
        SignalingClient::announce_with(&server.grpc_url(), "curious", metadata).await;
    assert_eq!(ack["peer_id"], "curious");
}
