//! Distributed tracing: one OpenTelemetry trace per offer across the frontend and the worker
//! (exported over OTLP/gRPC to a receiver in this test), no exporter without an endpoint, and
//! JSON log lines that carry the trace and span ids.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{connect_to_server, ClientOptions, ClientPeer};
use common::cluster::{one_at_a_time, Node, RedisProcess};
use common::otlp::{OtlpReceiver, ReceivedSpan};
use common::signaling::{SignalingClient, SERVER};
use common::websocket::WsClient;
use common::{metric_value, WAIT};
use remotemedia_webrtc::proto::signaling::{self as pb, signaling_request::Request as Req};
use serde_json::{json, Value};

/// A client's own trace: the W3C example ids.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Generous bound on any one step of a call on a loaded machine (not a timing check).
const PLAUSIBLE: Duration = Duration::from_secs(60);

const FRONTEND: &str = "remotemedia-frontend";
const WORKER: &str = "remotemedia-worker";

async fn wait_for_workers(frontend: &Node, n: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = frontend.metrics().await;
        if metric_value(&metrics, "remotemedia_frontend_workers_available") == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{n} worker(s) never available");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The span of `service` named `name` whose attribute `key` is `value`.
fn find<'s>(
    spans: &'s [ReceivedSpan],
    service: &str,
    name: &str,
    key: &str,
    value: &str,
) -> &'s ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name && s.attribute(key) == Some(value))
        .unwrap_or_else(|| panic!("no {service} span {name} with {key}={value}: {spans:#?}"))
}

/// Whether `span` descends from the span `ancestor` (following parents across processes).
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &str) -> bool {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut parent = span.parent_span_id.as_str();
    for _ in 0..spans.len() {
        if parent == ancestor {
            return true;
        }
        match by_id.get(parent) {
            Some(next) => parent = next.parent_span_id.as_str(),
            None => return false,
        }
    }
    false
}

fn assert_plausible(span: &ReceivedSpan) {
    let took = span.duration();
    assert!(
        !took.is_zero() && took < PLAUSIBLE,
        "{} {} took {took:?}",
        span.service,
        span.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_offer_from_the_frontend_to_its_worker() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // Batches are held for ten minutes: the spans can only arrive by the shutdown flush.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ];
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut worker = Node::worker_with_env("worker-a", &url, &[], &env).await;
    let mut frontend = Node::start_with_env("frontend", "frontend", &url, &[], &env).await;
    wait_for_workers(&frontend, 1.0).await;

    // A client with its own trace context on its stream: an echo call, then it hangs up.
    let mut signaling =
        SignalingClient::open_with_metadata(&frontend.grpc_url(), &[("traceparent", TRACEPARENT)])
            .await;
    let announce = signaling
        .send(Req::Announce(pb::AnnounceRequest {
            peer_id: "traced-caller".into(),
            capabilities: None,
            metadata: HashMap::new(),
        }))
        .await;
    signaling.expect_ack(&announce).await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    let report = connect_to_server(&mut signaling, &mut peer).await;
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "sent 440 Hz, got {got} Hz");
    let disconnect = signaling
        .send(Req::Disconnect(pb::DisconnectRequest {
            peer_id: SERVER.into(),
        }))
        .await;
    signaling.expect_ack(&disconnect).await;

    // A client without one: its offer starts a trace of its own.
    let (mut other, _) = SignalingClient::announce(&frontend.grpc_url(), "untraced-caller").await;
    let other_peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = other.offer(SERVER, other_peer.offer().await).await;
    let ack = other.expect_ack(&offer).await;
    let other_offer_id = ack["offer_id"].as_str().unwrap().to_owned();
    signaling.leave().await;
    other.leave().await;
    peer.close().await;
    other_peer.close().await;

    // Every role's graceful stop flushes its spans.
    frontend.sigterm();
    frontend.wait_exit(WAIT).await;
    worker.sigterm();
    worker.wait_exit(WAIT).await;
    let spans = receiver.spans();

    let offer = find(&spans, FRONTEND, "offer", "offer_id", &report.offer_id);
    assert_eq!(
        offer.trace_id, CLIENT_TRACE,
        "the client's trace is continued"
    );
    let request = spans
        .iter()
        .find(|s| s.span_id == offer.parent_span_id)
        .expect("the offer's request span");
    assert_eq!(request.name, "signaling.offer");
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == CLIENT_TRACE)
        .collect();
    let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, HashSet::from([FRONTEND, WORKER]), "{trace:#?}");

    // The worker's session is part of the offer's trace.
    let session = find(&spans, WORKER, "session", "offer_id", &report.offer_id);
    assert_eq!(session.trace_id, CLIENT_TRACE);
    assert!(
        descends_from(&spans, session, &offer.span_id),
        "session is not under the offer: {spans:#?}"
    );
    assert_eq!(session.attribute("peer_id"), Some("traced-caller"));
    assert_eq!(session.attribute("close_reason"), Some("client"));

    // Each step, with its facts and a plausible duration.
    let placement = trace
        .iter()
        .find(|s| s.name == "placement")
        .expect("placement span");
    assert_eq!(placement.parent_span_id, offer.span_id);
    assert_eq!(placement.attribute("candidates"), Some("1"));
    assert_eq!(placement.attribute("worker_id"), Some("worker-a"));
    assert_eq!(
        placement.attribute("reason"),
        Some("only worker able to take it")
    );
    for (service, name) in [
        (FRONTEND, "signaling.offer"),
        (FRONTEND, "offer"),
        (FRONTEND, "placement"),
        (FRONTEND, "worker_api.create_session"),
        (WORKER, "worker.create_session"),
        (WORKER, "session"),
        (WORKER, "pipeline.build"),
        (WORKER, "sdp.answer"),
        (WORKER, "ice.gathering"),
        (WORKER, "ice.connect"),
        (WORKER, "dtls.handshake"),
        (WORKER, "rtp.first_in"),
        (WORKER, "rtp.first_out"),
        (WORKER, "session.close"),
    ] {
        let span = trace
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {service} span {name} in the trace: {trace:#?}"));
        assert!(
            descends_from(&spans, span, CLIENT_SPAN),
            "{name} is not in the client's trace"
        );
        assert_plausible(span);
        if name.starts_with("ice.") || name.starts_with("dtls.") || name.starts_with("rtp.") {
            assert_eq!(span.attribute("reached"), Some("true"), "{span:#?}");
            assert_eq!(
                span.parent_span_id, session.span_id,
                "{name} is not under session"
            );
        }
    }
    let close = find(&spans, WORKER, "session.close", "reason", "client");
    assert_eq!(close.parent_span_id, session.span_id);

    // The untraced client's offer: a trace of its own, rooted at its request, reaching the
    // worker too.
    let other_offer = find(&spans, FRONTEND, "offer", "offer_id", &other_offer_id);
    assert_ne!(other_offer.trace_id, CLIENT_TRACE);
    let other_request = spans
        .iter()
        .find(|s| s.span_id == other_offer.parent_span_id)
        .expect("request span");
    assert!(
        other_request.parent_span_id.is_empty(),
        "{other_request:#?}"
    );
    let other_session = find(&spans, WORKER, "session", "offer_id", &other_offer_id);
    assert_eq!(other_session.trace_id, other_offer.trace_id);
    assert!(descends_from(&spans, other_session, &other_offer.span_id));
    // It never connected: the close says so, and where it stopped.
    let never = spans
        .iter()
        .find(|s| s.name == "rtp.first_in" && s.parent_span_id == other_session.span_id)
        .expect("rtp.first_in of the unconnected session");
    assert_eq!(never.attribute("reached"), Some("false"));

    // Hanging up is in the client's trace: the stream's end closed the session.
    let leave = find(
        &spans,
        FRONTEND,
        "signaling.leave",
        "peer_id",
        "traced-caller",
    );
    assert_eq!(leave.parent_span_id, CLIENT_SPAN);

    // Ids only: no SDP (nor anything else from it) in any attribute.
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains("v=0") && !value.contains("a=ice-pwd"),
                "{} {key} carries SDP: {value}",
                span.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_http_protobuf_when_asked() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let receiver = OtlpReceiver::start_http().await;
    let endpoint = receiver.endpoint();
    // Quiet logs do not silence the traces.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("RUST_LOG", "warn"),
    ];
    let redis = RedisProcess::start();
    let mut server = Node::start_with_env("server", "grpc", &redis.url(), &[], &env).await;
    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "caller").await;
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let offer = signaling.offer(SERVER, peer.offer().await).await;
    let ack = signaling.expect_ack(&offer).await;
    let offer_id = ack["offer_id"].as_str().unwrap().to_owned();
    signaling.leave().await;
    peer.close().await;
    server.sigterm();
    server.wait_exit(WAIT).await;

    // One process: the session sits right under the offer.
    let spans = receiver.spans();
    let offer = find(&spans, "remotemedia-grpc", "offer", "offer_id", &offer_id);
    let session = find(&spans, "remotemedia-grpc", "session", "offer_id", &offer_id);
    assert_eq!(session.parent_span_id, offer.span_id);
    assert_eq!(session.trace_id, offer.trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_no_exporter_starts() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    // The OTLP/gRPC default port on this host: an exporter with no endpoint would call here.
    let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:4317").await else {
        panic!("127.0.0.1:4317 is taken: this test needs the OTLP default port to watch it");
    };
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let watcher = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Every standard variable but the endpoint, which is set empty (the spec's "unset").
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "should-not-export"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let redis = RedisProcess::start();
    let mut server = Node::start_with_env("server", "grpc", &redis.url(), &[], &env).await;

    let (mut signaling, _) = SignalingClient::announce(&server.grpc_url(), "caller").await;
    let mut peer = ClientPeer::new(ClientOptions::default()).await;
    connect_to_server(&mut signaling, &mut peer).await;
    let got = peer.tone_round_trip(440.0).await;
    assert!((got - 440.0).abs() <= 5.0, "sent 440 Hz, got {got} Hz");
    signaling.leave().await;
    peer.close().await;
    server.sigterm();
    server.wait_exit(WAIT).await;

    assert_eq!(
        attempts.load(Ordering::SeqCst),
        0,
        "something connected to the OTLP port; log:\n{}",
        server.log_text()
    );
    assert!(!server.log_text().contains("exporting spans"));
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_trace_and_span_ids() {
    common::init_tracing();
    let _serial = one_at_a_time().await;
    let redis = RedisProcess::start();
    let mut server = Node::start_with_env(
        "server",
        "grpc",
        &redis.url(),
        &["--log-format", "json"],
        &[],
    )
    .await;

    // A browser-like client announces with its trace context in the params; its offer's
    // lines carry that trace.
    let mut ws = WsClient::connect(server.http).await;
    ws.call(
        "peer.announce",
        json!({"peer_id": "ws-caller", "traceparent": TRACEPARENT}),
    )
    .await
    .expect("announce");
    let peer = ClientPeer::new(ClientOptions::default()).await;
    let answer = ws
        .call(
            "peer.offer",
            json!({"to": SERVER, "sdp": peer.offer().await}),
        )
        .await
        .expect("offer answered");
    assert_eq!(answer["type"], "answer");
    ws.call("peer.disconnect", json!({"to": SERVER}))
        .await
        .expect("disconnect");
    drop(ws);
    peer.close().await;
    server.sigterm();
    server.wait_exit(WAIT).await;

    let log = server.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let hex = |value: &Value, len: usize| {
        value
            .as_str()
            .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut in_spans = 0;
    for line in &lines {
        // Every line logged inside a span names its trace and span.
        if line.get("span").is_some() {
            in_spans += 1;
            assert!(
                hex(&line["trace_id"], 32) && hex(&line["span_id"], 16),
                "{line}"
            );
        }
    }
    let message = |text: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == text)
            .unwrap_or_else(|| panic!("no line {text:?} in:\n{log}"))
    };
    for text in ["peer announced", "server session created"] {
        let line = message(text);
        assert_eq!(line["trace_id"], CLIENT_TRACE, "{line}");
        assert_ne!(line["span_id"], CLIENT_SPAN, "{line}");
    }
    assert!(in_spans >= 2, "{log}");
}

/// Rooms that span workers (#16): each relay link's setup is a `relay.link_open` span of the
/// receiving worker (the link id, the tracks asked for), and the publishing worker's
/// `worker.open_relay` is its child, in the same trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_links_setup_is_one_trace_across_both_workers() {
    use common::client::spawn_tone_at;
    use common::cluster::free_udp_port;
    use tokio_util::sync::CancellationToken;

    common::init_tracing();
    let _serial = one_at_a_time().await;
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ];
    let redis = RedisProcess::start();
    let url = redis.url();
    let mut workers = Vec::new();
    for name in ["worker-a", "worker-b"] {
        let relay = free_udp_port().to_string();
        let args = [
            "--capacity",
            "1",
            "--relay-port",
            relay.as_str(),
            "--insecure-relay",
        ];
        workers.push(Node::worker_with_env(name, &url, &args, &env).await);
    }
    let frontend = Node::start("frontend", "frontend", &url, &["--room-span-workers"]).await;
    wait_for_workers(&frontend, 2.0).await;

    // One participant per worker, each publishing: each worker opens a link to the other.
    let stop = CancellationToken::new();
    let mut peers = Vec::new();
    for id in ["traced-a", "traced-b"] {
        let metadata = HashMap::from([("room".to_owned(), "traced".to_owned())]);
        let (mut signaling, _) =
            SignalingClient::announce_with(&frontend.grpc_url(), id, metadata).await;
        let mut peer = ClientPeer::new(ClientOptions::default()).await;
        connect_to_server(&mut signaling, &mut peer).await;
        spawn_tone_at(peer.audio.clone().unwrap(), 440.0, 0.5, stop.clone());
        peers.push((signaling, peer));
    }
    for worker in &workers {
        worker
            .wait_metric("remotemedia_relay_links_active", WAIT, |n| n == 1.0)
            .await;
    }
    stop.cancel();
    for (signaling, peer) in peers {
        signaling.leave().await;
        peer.close().await;
    }
    for worker in &mut workers {
        worker.sigterm();
        worker.wait_exit(WAIT).await;
    }
    let spans = receiver.spans();

    let opens: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == WORKER && s.name == "relay.link_open")
        .collect();
    let opened: Vec<&&ReceivedSpan> = opens
        .iter()
        .filter(|s| s.attribute("link").is_some())
        .collect();
    assert!(opened.len() >= 2, "one link each way: {opens:#?}");
    for open in opened {
        assert_eq!(open.attribute("room"), Some("traced"));
        assert_eq!(open.attribute("tracks"), Some("1"));
        assert!(open.parent_span_id.is_empty(), "a trace of its own");
        assert_plausible(open);
        let link = open.attribute("link").unwrap();
        let served = find(&spans, WORKER, "worker.open_relay", "link", link);
        assert_eq!(served.trace_id, open.trace_id);
        assert_eq!(served.parent_span_id, open.span_id);
        assert_eq!(served.attribute("room"), Some("traced"));
    }
}
