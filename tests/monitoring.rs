//! The monitoring the chart ships is built from real metric names: every `remotemedia_*`
//! name in the Grafana dashboard (deploy/grafana/remotemedia.json) and the alert rules
//! (deploy/prometheus/rules.yaml) is exported by a frontend, a worker or a controller of a
//! local cluster after one call. Labelled families show before their first event.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::BTreeSet;

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::signaling::SignalingClient;

/// Every `remotemedia_<name>` token of a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("remotemedia_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The sample names of a Prometheus text exposition (`name{labels} value` or `name value`).
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let url = redis.url();
    let controller = Node::start("controller", "controller", &url, &[]).await;
    let worker = Node::worker("worker-m", &url, &[]).await;
    let frontend = Node::start("frontend", "frontend", &url, &[]).await;
    let frontend_ref = &frontend;
    common::eventually("the frontend to see the worker", || async move {
        common::metric_value(
            &frontend_ref.metrics().await,
            "remotemedia_frontend_workers_available",
        ) == Some(1.0)
    })
    .await;

    // One call: placed, connected, a tone both ways, closed.
    let (mut signaling, _) =
        SignalingClient::announce(&frontend.grpc_url(), "metrics-caller").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "sent 440 Hz, got {got} Hz");
    peer.close().await;
    signaling.leave().await;
    let worker_ref = &worker;
    common::eventually("the session to close on the worker", || async move {
        common::metric_value(
            &worker_ref.metrics().await,
            "remotemedia_worker_sessions_active",
        ) == Some(0.0)
    })
    .await;

    let mut exported_names = BTreeSet::new();
    for node in [&frontend, &worker, &controller] {
        let names = exported(&node.metrics().await);
        assert!(
            names.iter().any(|n| n.starts_with("remotemedia_")),
            "{} exports no remotemedia_ metric",
            node.name
        );
        exported_names.extend(names);
    }

    for file in [
        "deploy/grafana/remotemedia.json",
        "deploy/prometheus/rules.yaml",
    ] {
        let used = metric_names(&repo_file(file));
        assert!(used.len() >= 4, "{file} uses only {used:?}");
        let missing: Vec<&String> = used.difference(&exported_names).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics no role exports: {missing:?}\nexported: {exported_names:?}"
        );
    }
}

#[test]
fn labelled_families_show_before_their_first_event() {
    // The process-wide registry of this test binary: nothing has happened in it.
    let names = exported(&remotemedia_webrtc::metrics::metrics().render());
    for family in [
        "remotemedia_cluster_redis_errors_total",
        "remotemedia_controller_workers",
        "remotemedia_frontend_offers_total",
        "remotemedia_worker_sessions_closed_total",
        "remotemedia_media_rtp_packets_total",
        "remotemedia_media_jitter_buffer_events_total",
        "remotemedia_media_retransmissions_total",
        "remotemedia_media_opus_seconds_bucket",
        "remotemedia_pipeline_node_seconds_bucket",
        "remotemedia_tls_handshakes_total",
        "remotemedia_tls_certificate_reloads_total",
    ] {
        assert!(
            names.contains(family),
            "{family} is not exported before its first event"
        );
    }
}
