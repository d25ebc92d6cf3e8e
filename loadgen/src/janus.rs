//! Connecting a load peer to Janus' EchoTest plugin over the Janus HTTP API: create a session,
//! attach the plugin, send `{audio: true}` with the offer, long-poll for the answer, keep the
//! session alive until the peer leaves.
//!
//! libnice takes no trickle here: the offer carries every client candidate, and Janus' answer
//! carries its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use remotemedia_webrtc::client::{ClientError, LoadPeer, SetupTimes};

use super::error::LoadgenError;

/// How long a peer may take from session creation to connected.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Janus drops sessions silent for 60 s; the long poll counts, a keepalive is cheap too.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// The Janus HTTP API at one base URL (`http://host:8088/janus`), shared by all peers.
#[derive(Clone)]
pub struct JanusApi {
    base: String,
    http: Arc<Client<HttpConnector, Full<Bytes>>>,
    transactions: Arc<AtomicU64>,
}

impl JanusApi {
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: Arc::new(
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(1024)
                    .build(connector),
            ),
            transactions: Arc::new(AtomicU64::new(0)),
        }
    }

    fn transaction(&self) -> String {
        format!("t{}", self.transactions.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) async fn request(
        &self,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, LoadgenError> {
        let uri = format!("{}{path}", self.base);
        let builder = hyper::Request::builder().uri(&uri);
        let request = match body {
            Some(body) => builder
                .method("POST")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string()))),
            None => builder.method("GET").body(Full::new(Bytes::new())),
        }
        .map_err(|e| LoadgenError::Http(format!("{uri}: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| LoadgenError::Http(format!("{uri}: {e}")))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| LoadgenError::Http(format!("{uri}: {e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| LoadgenError::Janus(format!("{uri}: {e}")))
    }

    /// POSTs a Janus request with a fresh transaction; fails on `"janus": "error"`.
    pub(crate) async fn post(&self, path: &str, mut body: Value) -> Result<Value, LoadgenError> {
        body["transaction"] = Value::String(self.transaction());
        let reply = self.request(path, Some(body)).await?;
        if reply["janus"] == "error" {
            return Err(LoadgenError::Janus(reply["error"]["reason"].to_string()));
        }
        Ok(reply)
    }
}

/// A peer's Janus session, kept alive until the peer leaves.
pub struct JanusSession {
    api: JanusApi,
    session: u64,
    poller: JoinHandle<()>,
}

impl JanusSession {
    /// Destroys the session (Janus hangs the PeerConnection up).
    pub async fn leave(self) {
        self.poller.abort();
        let path = format!("/{}", self.session);
        if let Err(err) = self.api.post(&path, json!({"janus": "destroy"})).await {
            tracing::debug!(%err, "destroying a Janus session");
        }
    }
}

/// Connects `peer` to a new EchoTest handle.
///
/// # Errors
/// HTTP or Janus errors, a WebRTC failure, or [`LoadgenError::Timeout`].
pub async fn connect(
    api: &JanusApi,
    peer: &mut LoadPeer,
) -> Result<(JanusSession, SetupTimes), LoadgenError> {
    tokio::time::timeout(SETUP_TIMEOUT, setup(api, peer))
        .await
        .map_err(|_| ClientError::Timeout("create to connected"))?
}

pub(crate) fn id(reply: &Value) -> Result<u64, LoadgenError> {
    reply["data"]["id"]
        .as_u64()
        .ok_or_else(|| LoadgenError::Janus(format!("no id in {reply}")))
}

async fn setup(
    api: &JanusApi,
    peer: &mut LoadPeer,
) -> Result<(JanusSession, SetupTimes), LoadgenError> {
    let session = id(&api.post("", json!({"janus": "create"})).await?)?;
    let session_path = format!("/{session}");
    let handle = id(&api
        .post(
            &session_path,
            json!({"janus": "attach", "plugin": "janus.plugin.echotest"}),
        )
        .await?)?;
    let sdp = peer.offer(true).await?;
    let started = Instant::now();
    api.post(
        &format!("/{session}/{handle}"),
        json!({
            "janus": "message",
            "body": {"audio": true, "video": false},
            "jsep": {"type": "offer", "sdp": sdp},
        }),
    )
    .await?;
    let mut answer = None;
    while answer.is_none() {
        let events = api
            .request(&format!("{session_path}?maxev=10"), None)
            .await?;
        let events = match events {
            Value::Array(events) => events,
            event => vec![event],
        };
        for event in events {
            if let Some(sdp) = event["jsep"]["sdp"].as_str() {
                answer = Some(started.elapsed());
                peer.accept_answer(sdp.to_owned()).await?;
            }
        }
    }
    let mut connected = None;
    while connected.is_none() {
        if peer.is_connected() {
            connected = Some(started.elapsed());
            break;
        }
        peer.state
            .changed()
            .await
            .map_err(|_| ClientError::Signaling("peer connection dropped".into()))?;
    }
    let poller = tokio::spawn(keep_alive(api.clone(), session));
    let times = SetupTimes {
        answer: answer.unwrap_or_default(),
        connected: connected.unwrap_or_default(),
    };
    Ok((
        JanusSession {
            api: api.clone(),
            session,
            poller,
        },
        times,
    ))
}

/// Drains the session's events (long poll) and sends a keepalive now and then.
pub(crate) async fn keep_alive(api: JanusApi, session: u64) {
    let path = format!("/{session}");
    let mut last_keepalive = Instant::now();
    loop {
        if api
            .request(&format!("{path}?maxev=10"), None)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if last_keepalive.elapsed() >= KEEPALIVE {
            last_keepalive = Instant::now();
            let _ = api.post(&path, json!({"janus": "keepalive"})).await;
        }
    }
}
