//! Redis AUTH (`redis://:password@...`) and TLS (`rediss://` with `--redis-ca-file`): a
//! frontend and a worker complete a call through such a Redis; a wrong password or an
//! untrusted certificate stops a process at start with a clear message that never shows the
//! password.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::signaling::SignalingClient;
use common::tls::TestPki;
use common::{metric_value, WAIT};

const PASSWORD: &str = "s3cret-redis-pw";

fn password_redis() -> RedisProcess {
    RedisProcess::start_with(|port| {
        vec![
            "--port".into(),
            port.to_string(),
            "--requirepass".into(),
            PASSWORD.into(),
        ]
    })
}

/// A Redis that speaks only TLS on its port, with a certificate from `pki`.
fn tls_redis(pki: &TestPki) -> RedisProcess {
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (cert, key, ca) = (path(&pki.cert), path(&pki.key), path(&pki.ca));
    RedisProcess::start_with(move |port| {
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            cert,
            "--tls-key-file".into(),
            key,
            "--tls-ca-cert-file".into(),
            ca,
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    })
}

/// A worker and a frontend on `url`; a client calls through them and gets its tone back.
async fn call_through(url: &str, extra: &[&str]) -> (Node, Node) {
    let worker = Node::worker("worker", url, extra).await;
    let frontend = Node::start("frontend", "frontend", url, extra).await;
    let deadline = Instant::now() + WAIT;
    while metric_value(
        &frontend.metrics().await,
        "remotemedia_frontend_workers_available",
    ) != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the frontend never saw the worker; log:\n{}",
            frontend.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut signaling, _) = SignalingClient::announce(&frontend.grpc_url(), "caller").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let frequency = peer.tone_round_trip(440.0).await;
    assert!(
        (frequency - 440.0).abs() <= 5.0,
        "dominant frequency {frequency} Hz"
    );
    peer.close().await;
    signaling.leave().await;
    (worker, frontend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_completes_through_a_redis_that_requires_a_password() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = password_redis();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let (worker, frontend) = call_through(&url, &[]).await;
    for node in [&worker, &frontend] {
        let log = node.log_text();
        assert!(
            !log.contains(PASSWORD),
            "{} logged the password:\n{log}",
            node.name
        );
    }
    // The controller too.
    let controller = Node::start("controller", "controller", &url, &[]).await;
    assert!(!controller.log_text().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_every_role_at_start_without_showing_it() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = password_redis();
    let wrong = "not-the-password-42";
    for (mode, url) in [
        (
            "frontend",
            format!("redis://:{wrong}@127.0.0.1:{}", redis.port),
        ),
        (
            "worker",
            format!("redis://default:{wrong}@127.0.0.1:{}", redis.port),
        ),
        (
            "controller",
            format!("redis://:{wrong}@127.0.0.1:{}", redis.port),
        ),
        // No password at all against a Redis that needs one.
        ("frontend", format!("redis://127.0.0.1:{}", redis.port)),
    ] {
        let (status, output) = common::run_until_exit(&[
            "--mode",
            mode,
            "--redis-url",
            &url,
            "--grpc-address",
            "127.0.0.1:0",
            "--http-address",
            "127.0.0.1:0",
            "--ice-ips",
            "127.0.0.1",
        ]);
        assert!(!status.success(), "{mode} started with {url}: {output}");
        assert!(
            !output.contains(wrong),
            "{mode} showed the password:\n{output}"
        );
        assert!(
            output.contains(&format!("127.0.0.1:{}", redis.port)),
            "{mode}: the message names no Redis:\n{output}"
        );
        assert!(
            output.contains("check the user and password in --redis-url"),
            "{mode}: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_completes_through_redis_over_tls_verified_by_a_private_ca() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let pki = TestPki::new(&[]);
    let redis = tls_redis(&pki);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = pki.ca.to_str().unwrap().to_owned();
    call_through(&url, &["--redis-ca-file", &ca]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_redis_certificate_or_plaintext_to_tls_stops_the_process() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let pki = TestPki::new(&[]);
    let redis = tls_redis(&pki);
    let stranger = TestPki::new(&[]);
    let base = [
        "--mode",
        "frontend",
        "--grpc-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
    ];
    let tls_url = format!("rediss://127.0.0.1:{}", redis.port);
    // The system roots do not know the private CA: no connection (no insecure fallback).
    let mut args = base.to_vec();
    args.extend(["--redis-url", &tls_url]);
    let (status, output) = common::run_until_exit(&args);
    assert!(
        !status.success(),
        "connected to an unverified Redis: {output}"
    );
    assert!(output.contains(&tls_url), "{output}");
    assert!(output.contains("check --redis-ca-file"), "{output}");
    // Another CA: refused too.
    let stranger_ca = stranger.ca.to_str().unwrap().to_owned();
    let mut args = base.to_vec();
    args.extend(["--redis-url", &tls_url, "--redis-ca-file", &stranger_ca]);
    let (status, output) = common::run_until_exit(&args);
    assert!(!status.success(), "connected with the wrong CA: {output}");
    // A CA file with a plaintext URL is a configuration mistake, said so.
    let plain_url = format!("redis://127.0.0.1:{}", redis.port);
    let ca = pki.ca.to_str().unwrap().to_owned();
    let mut args = base.to_vec();
    args.extend(["--redis-url", &plain_url, "--redis-ca-file", &ca]);
    let (status, output) = common::run_until_exit(&args);
    assert!(!status.success());
    assert!(output.contains("is not rediss://"), "{output}");
}
