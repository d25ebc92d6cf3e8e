//! Logs and distributed tracing: the `tracing` subscriber every role installs, the
//! OpenTelemetry export of its spans over OTLP (only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set), and the W3C `traceparent` that carries one
//! offer's trace from a client to the frontend and on to the media worker.
//!
//! With no endpoint and text logs, no OpenTelemetry layer is installed at all: spans cost what
//! a plain `tracing` span costs, and nothing connects anywhere. Spans exist per session and
//! per signaling request, never per packet.

mod error;
mod export;
mod json;
mod propagation;
mod setup;

pub use error::TelemetryError;
pub use export::{ExportSettings, Protocol};
pub use propagation::{inject_current, RemoteParent, TRACEPARENT, TRACESTATE};
pub use setup::Telemetry;
