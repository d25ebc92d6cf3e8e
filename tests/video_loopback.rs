//! The SFU path: a client's VP8 RTP comes back unchanged on the server's video track, and
//! keyframe requests about it reach the sender, throttled.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::signaling::SignalingClient;
use common::video::{send_video, server_video_ssrc};
use common::TestServer;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_payloads_come_back_unchanged_and_keyframe_requests_go_upstream() {
    common::init_tracing();
    let server = TestServer::start().await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "camera").await;
    let mut peer = ClientPeer::new_with_video(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    connect_to_server(&mut signaling, &mut peer).await;
    let answer = peer.pc.remote_description().await.unwrap().sdp;
    assert!(
        answer.contains("VP8/90000"),
        "the answer accepts VP8:\n{answer}"
    );

    let sent = send_video(&peer, 60).await;
    common::eventually("the video to come back", || {
        let done = peer.received_video.lock().len() >= sent.len();
        async move { done }
    })
    .await;
    assert_eq!(
        peer.video_payloads(),
        sent,
        "payloads come back unchanged and in order"
    );

    // The client asks the server for keyframes of the server's video track, three times in a
    // burst: the server passes one PLI upstream (throttled to one per 500 ms).
    let media_ssrc = server_video_ssrc(&answer);
    for _ in 0..3 {
        peer.pc
            .write_rtcp(&[Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .unwrap();
    }
    common::eventually("a keyframe request to reach the sender", || {
        let n = peer.keyframe_requests.load(Ordering::Relaxed);
        async move { n >= 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        peer.keyframe_requests.load(Ordering::Relaxed),
        1,
        "throttled to one"
    );
    peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_drop_mode_sends_no_video_back() {
    common::init_tracing();
    let dir = std::env::temp_dir().join(format!("rm-video-drop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("novideo.yaml");
    std::fs::write(&manifest, "version: v1\nmedia: {video: drop}\nnodes: []\n").unwrap();
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;
    let (mut signaling, _) =
        SignalingClient::announce_with(&server.grpc_url(), "muted", HashMap::new()).await;
    let mut peer = ClientPeer::new_with_video(ClientOptions {
        audio: true,
        data: false,
    })
    .await;
    connect_to_server(&mut signaling, &mut peer).await;
    send_video(&peer, 30).await;
    peer.send_tone(440.0, 0.3, 20, 0.5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        peer.received.lock().arrivals.len() >= 5,
        "audio still loops back"
    );
    assert!(peer.received_video.lock().is_empty(), "no video comes back");
    peer.close().await;
}
