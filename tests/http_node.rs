//! `HttpNode` against a small HTTP server of the test's own on 127.0.0.1. Over a real call
//! (text on the data channel in, the node's outputs on the data channel out): a streamed
//! newline-delimited JSON answer arrives chunk by chunk and in order; a 500 (retried once), a
//! server that never answers (timeout) and a full queue behind a slow answer are each counted
//! in `remotemedia_pipeline_http_requests_total`, and the call keeps going. Without WebRTC:
//! server-sent events, their text picked by `textPointer`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::client::connect_with_data_channel;
use common::TestServer;
use prost::Message;
use remotemedia_webrtc::pipeline::{metrics, Envelope, Manifest, Pipeline, RuntimeData};
use remotemedia_webrtc::proto::common::DataBuffer;
use tokio_util::sync::CancellationToken;

/// Requests the test server has seen, by what it did.
#[derive(Default)]
struct Seen {
    failed: AtomicUsize,
    all: AtomicUsize,
}

/// The test's HTTP server. By request body: `fail` answers 500; `hang` never answers; `slow`
/// streams five lines 200 ms apart; `sse` streams server-sent events; anything else streams
/// one NDJSON line per word, upper-cased, 100 ms apart.
async fn http_server() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = axum::Router::new()
        .route("/answer", axum::routing::post(answer))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, seen)
}

/// A body sent as `items`, `gap` apart.
fn streamed(content_type: &'static str, items: Vec<String>, gap: Duration) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    tokio::spawn(async move {
        for (k, item) in items.into_iter().enumerate() {
            if k > 0 {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Ok(Bytes::from(item))).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn answer(State(seen): State<Arc<Seen>>, body: String) -> Response {
    seen.all.fetch_add(1, Ordering::SeqCst);
    match body.as_str() {
        "fail" => {
            seen.failed.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response()
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late".into_response()
        }
        "slow" => streamed(
            "application/x-ndjson",
            (0..5).map(|i| format!("{{\"slow\":{i}}}\n")).collect(),
            Duration::from_millis(200),
        ),
        "sse" => streamed(
            "text/event-stream",
            ["Hello", " from", " events."]
                .iter()
                .map(|t| {
                    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n")
                })
                .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
                .collect(),
            Duration::from_millis(50),
        ),
        text => streamed(
            "application/x-ndjson",
            text.split_whitespace()
                .enumerate()
                .map(|(i, w)| format!("{{\"text\":\"{}\",\"i\":{i}}}\n", w.to_uppercase()))
                .collect(),
            Duration::from_millis(100),
        ),
    }
}

fn requests(result: &str) -> u64 {
    metrics::metrics()
        .http_requests
        .with_label_values(&[result])
        .get()
}

fn manifest_file(address: SocketAddr) -> std::path::PathBuf {
    let yaml = format!(
        "version: v1\nmetadata:\n  name: http\nnodes:\n  - id: llm\n    node_type: HttpNode\n    \
         params:\n      url: http://{address}/answer\n      timeoutMs: 400\n      retries: 1\n      \
         retryBackoffMs: 50\n      queue: 2\nconnections: []\n"
    );
    let path = std::env::temp_dir().join(format!("http_node_{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The next data-channel JSON message, with when it came.
async fn next_json(
    messages: &mut tokio::sync::mpsc::Receiver<Bytes>,
    within: Duration,
) -> Option<(serde_json::Value, Instant)> {
    loop {
        let bytes = tokio::time::timeout(within, messages.recv()).await.ok()??;
        let envelope = Envelope::from_data_buffer(DataBuffer::decode(bytes).unwrap()).unwrap();
        if let RuntimeData::Json { payload, .. } = envelope.data {
            return Some((serde_json::from_str(&payload).unwrap(), Instant::now()));
        }
    }
}

async fn send_text(channel: &webrtc::data_channel::RTCDataChannel, text: &str) {
    let message = Envelope::new(RuntimeData::Text {
        text: text.into(),
        language: String::new(),
    })
    .into_data_buffer()
    .encode_to_vec();
    channel.send(&Bytes::from(message)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_stream_in_order_and_failures_are_counted_while_the_call_goes_on() {
    common::init_tracing();
    let (address, seen) = http_server().await;
    let manifest = manifest_file(address);
    let server = TestServer::start_with(|c| c.manifest = Some(manifest.clone())).await;
    let (_signaling, mut peer, channel) =
        connect_with_data_channel(&server.grpc_url(), "http-client").await;
    let _ = std::fs::remove_file(&manifest);
    let messages = &mut peer.messages;

    // Streamed: one message per line, in order, as the server sends them (100 ms apart).
    let sent = Instant::now();
    send_text(&channel, "hello streaming world").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_json(messages, Duration::from_secs(5)).await.unwrap());
    }
    let words: Vec<&str> = got
        .iter()
        .map(|(v, _)| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["HELLO", "STREAMING", "WORLD"]);
    let spread = got[2].1 - got[0].1;
    println!(
        "streamed: first chunk {:?} after sending, last {spread:?} after the first",
        got[0].1 - sent
    );
    assert!(
        spread >= Duration::from_millis(150),
        "chunks came together ({spread:?} apart): not passed on as they came"
    );

    // A 500, retried once, then given up on; counted.
    let (status, retries) = (requests("status"), metrics::metrics().http_retries.get());
    send_text(&channel, "fail").await;
    common::eventually("the 500 counted", || async { requests("status") > status }).await;
    assert_eq!(
        seen.failed.load(Ordering::SeqCst),
        2,
        "one try and one retry"
    );
    assert!(metrics::metrics().http_retries.get() > retries);

    // No answer at all: a timeout (after a retry), counted.
    let timeouts = requests("timeout");
    let started = Instant::now();
    send_text(&channel, "hang").await;
    common::eventually("the timeout counted", || async {
        requests("timeout") > timeouts
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "two 400 ms attempts took {took:?}"
    );

    // A slow answer (1 s) holds the only slot; of four more requests, the queue (2) keeps the
    // last two: the first two are dropped and counted, the last two answered, in order.
    let dropped = requests("dropped");
    send_text(&channel, "slow").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for word in ["one", "two", "three", "four"] {
        send_text(&channel, word).await;
    }
    let mut answers = Vec::new();
    while answers.len() < 7 {
        let (value, _) = next_json(messages, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("only {answers:?}"));
        answers.push(value);
    }
    let slow = answers.iter().filter(|v| v.get("slow").is_some()).count();
    let words: Vec<&str> = answers.iter().filter_map(|v| v["text"].as_str()).collect();
    assert_eq!(slow, 5);
    assert_eq!(words, ["THREE", "FOUR"], "{answers:?}");
    assert!(requests("dropped") >= dropped + 2);

    // And the call goes on.
    send_text(&channel, "still here").await;
    let (value, _) = next_json(messages, Duration::from_secs(5)).await.unwrap();
    assert_eq!(value["text"], "STILL");
    assert!(peer.is_connected());
    println!(
        "the test server saw {} requests",
        seen.all.load(Ordering::SeqCst)
    );
    peer.close().await;
}

#[tokio::test]
async fn server_sent_events_come_out_as_the_text_they_point_to() {
    let (address, _) = http_server().await;
    let yaml = format!(
        "version: v1\nnodes:\n  - id: llm\n    node_type: HttpNode\n    params:\n      \
         url: http://{address}/answer\n      textPointer: /choices/0/delta/content\n\
         connections: []\n"
    );
    let pipeline = Pipeline::new(Manifest::parse(&yaml).unwrap()).unwrap();
    let mut session = pipeline.start(CancellationToken::new()).unwrap();
    session
        .input
        .send(Envelope::new(RuntimeData::Text {
            text: "sse".into(),
            language: String::new(),
        }))
        .await
        .unwrap();
    let mut texts = Vec::new();
    let mut times = Vec::new();
    while texts.len() < 3 {
        let env = tokio::time::timeout(Duration::from_secs(5), session.output.recv())
            .await
            .unwrap()
            .unwrap();
        if let RuntimeData::Text { text, .. } = env.data {
            texts.push(text);
            times.push(Instant::now());
        }
    }
    assert_eq!(texts, ["Hello", " from", " events."]);
    assert!(
        times[2] - times[0] >= Duration::from_millis(80),
        "not streamed"
    );
}
