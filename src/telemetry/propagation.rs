//! W3C trace context (`traceparent`, `tracestate`) across process boundaries: gRPC metadata
//! (a client's signaling stream, the frontend's calls to a worker) and JSON-RPC params.
//! Nothing happens while no OpenTelemetry layer is installed.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and gRPC metadata key, and JSON-RPC param) naming the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// Vendor state that travels with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Whether an OpenTelemetry layer is installed (set once by `Telemetry::install`).
static ACTIVE: AtomicBool = AtomicBool::new(false);

pub(super) fn activate() {
    ACTIVE.store(true, Ordering::Release);
}

fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// The trace context a request came with, from another process; empty when it came with
/// none (or a malformed one), or when tracing is off.
#[derive(Debug, Clone, Default)]
pub struct RemoteParent(Option<opentelemetry::Context>);

impl RemoteParent {
    /// The `traceparent`/`tracestate` of gRPC request metadata.
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        if !active() {
            return Self::default();
        }
        Self::valid(TraceContextPropagator::new().extract(&MetadataCarrier(metadata)))
    }

    /// A `traceparent` (and `tracestate`) given as text, e.g. JSON-RPC params.
    pub fn from_traceparent(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        let Some(traceparent) = traceparent.filter(|_| active()) else {
            return Self::default();
        };
        let carrier = TextCarrier {
            traceparent,
            tracestate,
        };
        Self::valid(TraceContextPropagator::new().extract(&carrier))
    }

    fn valid(cx: opentelemetry::Context) -> Self {
        let valid = cx.span().span_context().is_valid();
        Self(valid.then_some(cx))
    }

    /// Whether a context came with the request.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Makes `span`, just created, a child of this remote context (nothing when empty).
    pub fn adopt(&self, span: &tracing::Span) {
        if let Some(cx) = &self.0 {
            // Fails only without an OpenTelemetry layer or on a span already started.
            if let Err(err) = span.set_parent(cx.clone()) {
                tracing::debug!(%err, "remote trace context not applied");
            }
        }
    }
}

/// Puts the current span's context into outgoing gRPC metadata, so the callee's spans
/// join this trace.
pub fn inject_current(metadata: &mut MetadataMap) {
    if !active() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataCarrierMut(metadata));
}

struct MetadataCarrier<'a>(&'a MetadataMap);

impl Extractor for MetadataCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct MetadataCarrierMut<'a>(&'a mut MetadataMap);

impl Injector for MetadataCarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct TextCarrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for TextCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}
