//! `webrtc_server drain`, the worker pod's preStop hook: the worker stops taking sessions
//! and fails readiness at once (liveness passes), keeps running until SIGTERM, and then
//! exits at once when it has no calls.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{one_at_a_time, try_http_get, Node, RedisProcess};
use common::WAIT;

fn status_of(response: &str) -> &str {
    response.split(' ').nth(1).unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prestop_drain_fails_readiness_and_sigterm_then_exits() {
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let mut worker =
        Node::worker("worker-prestop", &redis.url(), &["--drain-timeout", "60s"]).await;
    assert_eq!(
        status_of(&try_http_get(worker.http, "/readyz").await.unwrap()),
        "200"
    );

    let drain = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(["drain", "--worker-api", &worker.grpc.to_string()])
        .env_remove("REMOTEMEDIA_REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&drain.stdout);
    assert!(
        drain.status.success(),
        "drain failed: {stdout}{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    assert!(stdout.contains("0 sessions active"), "{stdout}");

    // Readiness fails; liveness does not; the process stays up.
    let http = worker.http;
    common::eventually("readiness to fail", || async move {
        status_of(&try_http_get(http, "/readyz").await.unwrap_or_default()) == "503"
    })
    .await;
    assert_eq!(
        status_of(&try_http_get(worker.http, "/healthz").await.unwrap()),
        "200"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !worker.has_exited(),
        "the drain alone must not stop the worker"
    );
    let metrics = worker.metrics().await;
    assert_eq!(
        common::metric_value(&metrics, "remotemedia_worker_draining"),
        Some(1.0)
    );

    // Kubernetes sends SIGTERM after the hook: no calls, so the worker exits promptly.
    worker.sigterm();
    let deadline = Instant::now() + WAIT;
    while !worker.has_exited() {
        assert!(
            Instant::now() < deadline,
            "the worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn drain_without_a_worker_fails_with_the_address() {
    let port = common::cluster::free_tcp_port();
    let drain = Command::new(env!("CARGO_BIN_EXE_webrtc_server"))
        .args(["drain", "--worker-api", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!drain.status.success());
    let stderr = String::from_utf8_lossy(&drain.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undrain_makes_a_drained_worker_ready_and_take_sessions_again() {
    use remotemedia_webrtc::cluster::{request_drain, request_undrain, AttachToken};
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let worker = Node::worker(
        "worker-undrain",
        &redis.url(),
        &["--worker-token", "s3cret-token"],
    )
    .await;
    let api = worker.grpc.to_string();
    let secret = remotemedia_webrtc::config::Secret::new("s3cret-token");
    let token = AttachToken::new(Some(&secret)).unwrap();

    // Same authentication as the drain: without the token, refused.
    assert!(request_undrain(&api, AttachToken::default(), None)
        .await
        .is_err());

    request_drain(&api, token.clone(), None).await.unwrap();
    let http = worker.http;
    common::eventually("readiness to fail", || async move {
        status_of(&try_http_get(http, "/readyz").await.unwrap_or_default()) == "503"
    })
    .await;

    assert_eq!(request_undrain(&api, token, None).await.unwrap(), 0);
    common::eventually("readiness to pass again", || async move {
        status_of(&try_http_get(http, "/readyz").await.unwrap_or_default()) == "200"
    })
    .await;
    let metrics = worker.metrics().await;
    assert_eq!(
        common::metric_value(&metrics, "remotemedia_worker_draining"),
        Some(0.0)
    );
}
