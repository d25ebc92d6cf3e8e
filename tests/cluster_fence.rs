//! A session create that times out on one worker and is retried on another must not end the
//! call: the slow worker may still create the session later, and that orphan must neither
//! trickle its candidates to the client nor tell it "server disconnected" when it times out;
//! it is closed instead (#17 item 8).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::Duration;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::signaling::{SignalingClient, SERVER};
use common::tcp_proxy::DelayProxy;
use common::WAIT;
use remotemedia_webrtc::proto::signaling::{
    self as pb, signaling_notification::Notification, signaling_response::Response as Resp,
};

/// What the frontend waits for a worker's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How late the slow worker gets what the frontend sends it: past the timeout.
const SLOWNESS: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_on_another_worker_does_not_end_the_call() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    // worker-a's API is reached through a proxy the test slows down. Its connect timeout is
    // short, so an orphan it makes would end (and say so) well within the test.
    let proxy = DelayProxy::bind().await;
    let proxy_address = proxy.address.to_string();
    let slow_port = common::cluster::free_udp_port();
    let slow = Node::start(
        "worker-a",
        "worker",
        &url,
        &[
            "--worker-id",
            "worker-a",
            "--udp-port",
            &slow_port.to_string(),
            "--worker-address",
            &proxy_address,
            "--connect-timeout",
            "2s",
        ],
    )
    .await;
    proxy.point_to(slow.grpc);
    let call_timeout = format!("{}s", CALL_TIMEOUT.as_secs());
    let frontend = Node::start(
        "frontend",
        "frontend",
        &url,
        &["--worker-call-timeout", &call_timeout],
    )
    .await;
    frontend
        .wait_metric("remotemedia_frontend_workers_available", WAIT, |n| n == 1.0)
        .await;

    // A first call opens the frontend's connection to worker-a while it is fast.
    let (mut warm_up, warm_peer) = {
        let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), "warm-up").await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        (signaling, peer)
    };
    warm_peer.expect_tone_back(440.0).await;
    warm_up.close();
    warm_peer.close().await;
    slow.wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
        .await;

    // Now worker-a is slow. The offer goes to it (the only worker); worker-b comes up while
    // the frontend waits, and takes the retry.
    proxy.set_delay(SLOWNESS);
    let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), "caller").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let (report, fast) = tokio::join!(connect_to_server(&mut signaling, &mut peer), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Node::worker("worker-b", &url, &[]).await
    });
    assert!(
        report.offer_to_answer >= CALL_TIMEOUT,
        "the answer came in {:?}: the first attempt did not time out",
        report.offer_to_answer
    );
    assert_eq!(fast.sessions_active().await, 1.0);

    // The orphan: worker-a gets the create late and makes a session no client will use.
    // Whatever it does, the client hears nothing from it, for longer than its connect
    // timeout would take to end it.
    let watch = async {
        let deadline = tokio::time::Instant::now() + SLOWNESS + Duration::from_secs(6);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(response) = signaling.next_within(left).await else {
                return;
            };
            let response = response.unwrap().expect("the signaling stream stays open");
            match response.response {
                Some(Resp::Notification(pb::SignalingNotification {
                    notification: Some(Notification::PeerDisconnected(gone)),
                })) => panic!("{} disconnected from the live call", gone.peer_id),
                Some(Resp::Notification(pb::SignalingNotification {
                    notification: Some(Notification::IceCandidate(c)),
                })) => {
                    assert_eq!(c.from_peer_id, SERVER);
                    assert!(
                        !c.candidate.contains(&format!(" {slow_port} ")),
                        "the orphan on worker-a trickled {:?}",
                        c.candidate
                    );
                }
                _ => {}
            }
        }
    };
    let orphan_made = async {
        slow.wait_metric("remotemedia_worker_sessions_total", WAIT * 2, |n| n == 2.0)
            .await;
        slow.wait_metric("remotemedia_worker_sessions_active", WAIT, |n| n == 0.0)
            .await;
    };
    tokio::join!(watch, orphan_made);

    // It was closed as abandoned, not left to time out (which would have told the client).
    let timed_out = slow
        .metric(r#"remotemedia_worker_sessions_closed_total{reason="connect_timeout"}"#)
        .await;
    assert_eq!(timed_out, 0.0, "the orphan was left to time out");
    assert!(
        slow.log_text()
            .contains("session created after its frontend gave up"),
        "worker-a's log:\n{}",
        slow.log_text()
    );

    // The call on worker-b carries on.
    peer.expect_tone_back(523.0).await;
    assert_eq!(fast.sessions_active().await, 1.0);
}
