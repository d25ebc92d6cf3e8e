//! `HttpNode`: posts each text or JSON input to a URL (the operator's language model or
//! business logic) and sends the response on, streamed chunk by chunk when the server streams
//! newline-delimited JSON or server-sent events (see [`super::http_stream`]).
//!
//! An offloaded node whose requests are async jobs ([`crate::pipeline::offload`]): they run on
//! the async runtime in the node's own task set, never on the media path's tasks nor the
//! blocking pool. Requests wait in a bounded queue (`queue`) and at most `concurrency` run at
//! once (1 by default: answers in order); a full queue drops its oldest request. Each attempt
//! has `timeoutMs` for the response to start and for each next chunk; a timeout, a transport
//! error, a 5xx or 429 is retried `retries` times (with a doubling back-off) unless part of
//! the answer was already passed on. Every request ends counted by result in
//! `remotemedia_pipeline_http_requests_total`, retries in
//! `remotemedia_pipeline_http_retries_total`; the session goes on whatever the server does.
//!
//! Outputs: each item (a line, an event, or the whole body) is a `DataBuffer{json}` with
//! `schema_type` [`HTTP_SCHEMA`] when it is JSON, a TextBuffer otherwise; with `textPointer`
//! (a JSON pointer such as `/text` or `/choices/0/delta/content`), the string it points to in
//! each JSON item goes out as a TextBuffer instead (items without it send nothing).

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::time::Instant;

use super::http_stream::{BodyDecoder, Framing};
use super::{Node, Params};
use crate::pipeline::data::{Envelope, RuntimeData};
use crate::pipeline::error::NodeError;
use crate::pipeline::offload::{AsyncJob, Completed, Job, Offload, Outcome, Progress};
use crate::pipeline::MAX_JOBS_IN_FLIGHT;

/// The `schema_type` of JSON the node passes on.
pub const HTTP_SCHEMA: &str = "http";

/// What became of a request (the `result` label of `remotemedia_pipeline_http_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpResult {
    /// A 2xx response, read to its end.
    Ok,
    /// The server answered with another status (after any retries).
    Status,
    /// The response, or its next chunk, did not come in time (after any retries).
    Timeout,
    /// No connection, or it broke (after any retries).
    Transport,
    /// The response outgrew `maxResponseBytes`.
    TooLarge,
    /// Dropped from a full queue before it was sent.
    Dropped,
}

impl HttpResult {
    /// Every result, so each shows at zero before it first happens.
    pub const ALL: [Self; 6] = [
        Self::Ok,
        Self::Status,
        Self::Timeout,
        Self::Transport,
        Self::TooLarge,
        Self::Dropped,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Status => "status",
            Self::Timeout => "timeout",
            Self::Transport => "transport",
            Self::TooLarge => "too_large",
            Self::Dropped => "dropped",
        }
    }
}

fn count(result: HttpResult) {
    crate::pipeline::metrics::metrics()
        .http_requests
        .with_label_values(&[result.label()])
        .inc();
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the server answered {0}")]
    Status(StatusCode),
    #[error("{0}")]
    Transport(String),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Status(status) => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::TooLarge(_) => false,
        }
    }

    fn result(&self) -> HttpResult {
        match self {
            Self::Timeout(_) => HttpResult::Timeout,
            Self::Status(_) => HttpResult::Status,
            Self::Transport(_) => HttpResult::Transport,
            Self::TooLarge(_) => HttpResult::TooLarge,
        }
    }
}

/// What every request of a node shares.
#[derive(Debug)]
struct Settings {
    node: String,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    text_pointer: Option<String>,
    max_response_bytes: usize,
}

impl Settings {
    /// One item of the response as an output (`None`: nothing to send).
    fn output(&self, item: String) -> Option<Envelope> {
        let json = serde_json::from_str::<serde_json::Value>(&item).ok();
        let data = match (&self.text_pointer, json) {
            (Some(pointer), Some(value)) => RuntimeData::Text {
                text: value.pointer(pointer)?.as_str()?.to_owned(),
                language: String::new(),
            },
            (None, Some(_)) => RuntimeData::Json {
                payload: item,
                schema_type: HTTP_SCHEMA.to_owned(),
            },
            (_, None) => RuntimeData::Text {
                text: item,
                language: String::new(),
            },
        };
        Some(Envelope::new(data))
    }
}

/// One input, to be posted.
#[derive(Debug)]
struct Request {
    utterance: u64,
    body: Bytes,
    content_type: &'static str,
}

/// Posts its inputs (see the module docs).
pub struct HttpNode {
    settings: Arc<Settings>,
    /// Requests not yet sent, oldest first; at most `queue`.
    waiting: VecDeque<Request>,
    queue: usize,
    concurrency: usize,
    /// Requests being sent.
    running: usize,
    jobs: Vec<AsyncJob>,
    next_job: u64,
    next_utterance: u64,
}

impl HttpNode {
    /// `{url (required, http or https), headers {}, timeoutMs 10000, retries 1,
    /// retryBackoffMs 200, queue 8, concurrency 1, textPointer, maxResponseBytes 1048576}`.
    ///
    /// # Errors
    /// [`NodeError::Param`] naming the param: no or a bad URL, a bad header, a value out of
    /// range.
    pub fn new(params: &Params<'_>) -> Result<Self, NodeError> {
        let url: String = params.required("url")?;
        let url: Uri = url
            .parse()
            .map_err(|e| params.error("url", format!("`{url}` is not a URL: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(params.error("url", format!("`{url}` is not an http(s) URL")));
        }
        let mut headers = Vec::new();
        let given: std::collections::BTreeMap<String, String> =
            params.get_or("headers", Default::default())?;
        for (name, value) in given {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| params.error("headers", format!("`{name}`: {e}")))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| params.error("headers", format!("`{name}`: {e}")))?;
            headers.push((name, value));
        }
        let ranged = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| {
            let value: u64 = params.get_or(name, default)?;
            if !range.contains(&value) {
                return Err(params.error(
                    name,
                    format!("must be {}..={}, got {value}", range.start(), range.end()),
                ));
            }
            Ok(value)
        };
        let timeout = Duration::from_millis(ranged("timeoutMs", 10_000, 1..=600_000)?);
        let retries = ranged("retries", 1, 0..=10)? as u32;
        let backoff = Duration::from_millis(ranged("retryBackoffMs", 200, 0..=60_000)?);
        let queue = ranged("queue", 8, 1..=1_024)? as usize;
        let concurrency = ranged("concurrency", 1, 1..=MAX_JOBS_IN_FLIGHT as u64)? as usize;
        let max_response_bytes = ranged("maxResponseBytes", 1 << 20, 1..=64 << 20)? as usize;
        let text_pointer: Option<String> = params.get("textPointer")?;
        if let Some(pointer) = &text_pointer {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(params.error(
                    "textPointer",
                    format!("`{pointer}` is not a JSON pointer (e.g. /text)"),
                ));
            }
        }
        Ok(Self {
            settings: Arc::new(Settings {
                node: params.id().to_owned(),
                url,
                headers,
                timeout,
                retries,
                backoff,
                text_pointer,
                max_response_bytes,
            }),
            waiting: VecDeque::new(),
            queue,
            concurrency,
            running: 0,
            jobs: Vec::new(),
            next_job: 0,
            next_utterance: 0,
        })
    }

    /// Sends waiting requests while fewer than `concurrency` run.
    fn start(&mut self) {
        while self.running < self.concurrency {
            let Some(request) = self.waiting.pop_front() else {
                return;
            };
            let id = self.next_job;
            self.next_job += 1;
            self.running += 1;
            let settings = Arc::clone(&self.settings);
            self.jobs.push(AsyncJob {
                id,
                utterance: request.utterance,
                work: Box::new(move |progress| Box::pin(call(settings, request, progress))),
            });
        }
    }
}

impl Node for HttpNode {
    fn accepts(&self, data: &RuntimeData) -> bool {
        matches!(data, RuntimeData::Text { .. } | RuntimeData::Json { .. })
    }

    fn process(&mut self, input: Envelope, _out: &mut Vec<Envelope>) -> Result<(), NodeError> {
        let (body, content_type) = match input.data {
            RuntimeData::Text { text, .. } => (Bytes::from(text), "text/plain; charset=utf-8"),
            RuntimeData::Json { payload, .. } => (Bytes::from(payload), "application/json"),
            _ => return Ok(()),
        };
        let utterance = self.next_utterance;
        self.next_utterance += 1;
        self.waiting.push_back(Request {
            utterance,
            body,
            content_type,
        });
        if self.waiting.len() > self.queue {
            if let Some(oldest) = self.waiting.pop_front() {
                tracing::warn!(
                    node = %self.settings.node,
                    utterance = oldest.utterance,
                    "HTTP queue full: oldest request dropped"
                );
                count(HttpResult::Dropped);
            }
        }
        self.start();
        Ok(())
    }

    fn offload(&mut self) -> Option<&mut dyn Offload> {
        Some(self)
    }
}

impl Offload for HttpNode {
    fn take_jobs(&mut self, _jobs: &mut Vec<Job>) {}

    fn take_async_jobs(&mut self, jobs: &mut Vec<AsyncJob>) {
        jobs.append(&mut self.jobs);
    }

    fn complete(
        &mut self,
        done: Completed,
        _now: Instant,
        out: &mut Vec<Envelope>,
    ) -> Result<(), NodeError> {
        self.running = self.running.saturating_sub(1);
        match done.outcome {
            Outcome::Ran(Ok(outputs)) => out.extend(outputs),
            Outcome::Ran(Err(error)) => {
                tracing::warn!(node = %self.settings.node, %error, "HTTP request failed");
            }
            Outcome::Dropped(reason) => {
                tracing::warn!(node = %self.settings.node, reason = reason.label(), "HTTP request dropped");
                count(HttpResult::Dropped);
            }
        }
        self.start();
        Ok(())
    }
}

/// The HTTP client every `HttpNode` of the process shares (its connection pool): plain HTTP,
/// and HTTPS verified by the system's roots (rustls, ring).
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> &'static HttpClient {
    static CLIENT: LazyLock<HttpClient> = LazyLock::new(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::clone(&provider))
        {
            Ok(builder) => builder,
            Err(err) => {
                tracing::warn!(%err, "no system roots: HttpNode's https URLs will fail");
                #[allow(clippy::expect_used)] // ring supports the default protocol versions
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
    });
    &CLIENT
}

/// Posts `request`, retrying as the settings say; its outputs (those not already passed on).
async fn call(
    settings: Arc<Settings>,
    request: Request,
    progress: Progress,
) -> Result<Vec<Envelope>, NodeError> {
    let mut attempt = 0;
    loop {
        let mut passed_on = false;
        let error = match attempt_once(&settings, &request, &progress, &mut passed_on).await {
            Ok(outputs) => {
                count(HttpResult::Ok);
                return Ok(outputs);
            }
            Err(error) => error,
        };
        if error.retryable() && !passed_on && attempt < settings.retries {
            let wait = settings.backoff * 2u32.saturating_pow(attempt);
            attempt += 1;
            crate::pipeline::metrics::metrics().http_retries.inc();
            tracing::debug!(node = %settings.node, %error, attempt, ?wait, "HTTP request retried");
            tokio::time::sleep(wait).await;
            continue;
        }
        count(error.result());
        return Err(NodeError::Input(format!(
            "node `{}`: POST {}: {error}",
            settings.node, settings.url
        )));
    }
}

/// One attempt: the response's items are passed on as they come when it streams, or
/// returned at its end.
async fn attempt_once(
    settings: &Settings,
    request: &Request,
    progress: &Progress,
    passed_on: &mut bool,
) -> Result<Vec<Envelope>, CallError> {
    let mut builder =
        hyper::Request::post(settings.url.clone()).header(CONTENT_TYPE, request.content_type);
    for (name, value) in &settings.headers {
        builder = builder.header(name, value);
    }
    let http_request = builder
        .body(Full::new(request.body.clone()))
        .map_err(|e| CallError::Transport(e.to_string()))?;
    let response = tokio::time::timeout(settings.timeout, client().request(http_request))
        .await
        .map_err(|_| CallError::Timeout(settings.timeout))?
        .map_err(|e| CallError::Transport(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(CallError::Status(response.status()));
    }
    let framing = Framing::of(
        response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let mut decoder = BodyDecoder::new(framing, settings.max_response_bytes);
    let mut body = response.into_body();
    let mut items = Vec::new();
    loop {
        let frame = tokio::time::timeout(settings.timeout, body.frame())
            .await
            .map_err(|_| CallError::Timeout(settings.timeout))?;
        let frame = match frame {
            None => break,
            Some(frame) => frame.map_err(|e| CallError::Transport(error_chain(&e)))?,
        };
        if let Ok(data) = frame.into_data() {
            decoder
                .push(&data, &mut items)
                .map_err(|_| CallError::TooLarge(settings.max_response_bytes))?;
        }
        let outputs: Vec<Envelope> = items.drain(..).filter_map(|i| settings.output(i)).collect();
        if !outputs.is_empty() {
            *passed_on = true;
            if !progress.send(outputs).await {
                // The session ended.
                return Ok(Vec::new());
            }
        }
    }
    decoder.finish(&mut items);
    Ok(items
        .into_iter()
        .filter_map(|i| settings.output(i))
        .collect())
}

/// An error and its sources, on one line (hyper's own message is often just "client error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
