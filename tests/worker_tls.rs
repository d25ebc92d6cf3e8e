//! TLS on the internal worker API (`--worker-tls-cert`/`--worker-tls-key` on the worker,
//! `--worker-ca` and `--worker-tls-name` on the frontend and the drain command): a call is
//! placed over TLS; a frontend that dials plaintext cannot place, and says UNAVAILABLE.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::signaling::{SignalingClient, SERVER};
use common::tls::{TestPki, SERVER_NAME};
use common::{metric_value, WAIT};

async fn wait_for_worker(frontend: &Node) {
    let deadline = Instant::now() + WAIT;
    while metric_value(
        &frontend.metrics().await,
        "remotemedia_frontend_workers_available",
    ) != Some(1.0)
    {
        assert!(Instant::now() < deadline, "{}", frontend.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn worker_handshakes(metrics: &str, result: &str) -> f64 {
    metric_value(
        metrics,
        &format!("remotemedia_tls_handshakes_total{{listener=\"worker_api\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontends_place_calls_on_a_tls_worker_and_plaintext_ones_cannot() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let pki = TestPki::new(&[]);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (cert, key, ca) = (path(&pki.cert), path(&pki.key), path(&pki.ca));
    let redis = RedisProcess::start();
    let url = redis.url();
    let worker = Node::worker(
        "tls-worker",
        &url,
        &["--worker-tls-cert", &cert, "--worker-tls-key", &key],
    )
    .await;
    // The worker advertises 127.0.0.1; every worker's certificate is checked as `localhost`.
    let verifying = Node::start(
        "frontend-tls",
        "frontend",
        &url,
        &["--worker-ca", &ca, "--worker-tls-name", SERVER_NAME],
    )
    .await;
    let plaintext = Node::start("frontend-plain", "frontend", &url, &[]).await;
    wait_for_worker(&verifying).await;
    wait_for_worker(&plaintext).await;

    let (mut signaling, _) = SignalingClient::announce(&verifying.grpc_url(), "over-tls").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let frequency = peer.tone_round_trip(440.0).await;
    assert!((frequency - 440.0).abs() <= 5.0, "{frequency} Hz");
    assert!(worker_handshakes(&worker.metrics().await, "ok") >= 1.0);

    let failed = worker_handshakes(&worker.metrics().await, "failed");
    let (mut refused, _) = SignalingClient::announce(&plaintext.grpc_url(), "plain").await;
    let other = ClientPeer::new(ClientOptions::default()).await;
    let offer = refused.offer(SERVER, other.offer().await).await;
    let error = refused.expect_error(&offer).await;
    assert_eq!(error.code, tonic::Code::Unavailable as u32, "{error:?}");
    let deadline = Instant::now() + WAIT;
    while worker_handshakes(&worker.metrics().await, "failed") <= failed {
        assert!(
            Instant::now() < deadline,
            "the refused handshake was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.close().await;

    // The preStop drain verifies the worker the same way.
    let api = worker.grpc.to_string();
    let (status, output) = common::run_until_exit(&[
        "--worker-ca",
        &ca,
        "--worker-tls-name",
        SERVER_NAME,
        "drain",
        "--worker-api",
        &api,
    ]);
    assert!(status.success(), "{output}");
    assert!(output.contains("drains; 1 sessions active"), "{output}");
    peer.close().await;
}
