//! The process's `tracing` subscriber: `RUST_LOG` filter, text or JSON lines on stdout, and
//! the OpenTelemetry layer when spans are exported or JSON lines need trace ids.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::error::TelemetryError;
use super::export::{self, ExportSettings};
use super::json::{self, JsonWithTraceIds};
use super::propagation;
use crate::config::LogFormat;

/// Longest the last export may take at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The installed logging and tracing; [`Telemetry::shutdown`] flushes the spans not yet
/// exported.
pub struct Telemetry {
    /// `None` when no OpenTelemetry layer was installed (text logs, no endpoint).
    provider: Option<SdkTracerProvider>,
    exporting: bool,
}

impl Telemetry {
    /// Installs the global subscriber for a process of `role` (`service.name` is
    /// `remotemedia-<role>` unless `OTEL_SERVICE_NAME` says otherwise). Call once, inside the
    /// tokio runtime (the batch exporter runs on it).
    ///
    /// # Errors
    /// A malformed `OTEL_*` setting, or a subscriber already installed.
    pub fn install(role: &str, format: LogFormat) -> Result<Self, TelemetryError> {
        let export = ExportSettings::from_env(|name| std::env::var(name).ok())?;
        let provider = match (&export, format) {
            (None, LogFormat::Text) => None,
            (export, _) => Some(export::tracer_provider(role, export.as_ref())?),
        };
        // `RUST_LOG` filters the log lines only: traces keep this crate's spans (info and
        // up) whatever the log level, and never see other crates' spans or the exporter's
        // own events (which would feed back into it).
        let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let spans = Targets::new()
            .with_target(env!("CARGO_CRATE_NAME"), LevelFilter::INFO)
            .with_target("webrtc_server", LevelFilter::INFO);
        let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
        if let Some(provider) = &provider {
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(export::tracer(provider))
                    // Spans carry their own fields and source location, not per-poll timings
                    // or thread names: smaller spans, less work per span.
                    .with_tracked_inactivity(false)
                    .with_threads(false)
                    .with_filter(spans)
                    .boxed(),
            );
        }
        let dispatch = Arc::new(OnceLock::new());
        layers.push(match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                // Colours only on a terminal: log collectors get plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_filter(logs)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .fmt_fields(json::fields())
                .event_format(JsonWithTraceIds::new(Arc::clone(&dispatch)))
                .with_filter(logs)
                .boxed(),
        });
        let subscriber = tracing_subscriber::registry().with(layers);
        let installed = tracing::Dispatch::new(subscriber);
        let _ = dispatch.set(installed.downgrade());
        installed
            .try_init()
            .map_err(|err| TelemetryError::AlreadyInstalled(err.to_string()))?;
        if provider.is_some() {
            propagation::activate();
        }
        match &export {
            Some(export) => tracing::info!(
                protocol = ?export.protocol,
                "exporting spans over OTLP"
            ),
            None => tracing::debug!("no OTLP endpoint set: spans are not exported"),
        }
        Ok(Self {
            provider,
            exporting: export.is_some(),
        })
    }

    /// Exports the spans still queued and stops the exporter (at most 5 s). Returns whether
    /// it finished in time; when not, a thread is still blocked on it and the caller should
    /// exit the process rather than wait for the runtime's blocking pool.
    pub async fn shutdown(self) -> bool {
        let Some(provider) = self.provider else {
            return true;
        };
        // The async batch processor's shutdown blocks this thread until its task on the
        // runtime has exported: keep that off the runtime's worker threads.
        let flush = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_TIMEOUT, flush).await {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(err))) => {
                if self.exporting {
                    tracing::warn!(%err, "flushing spans at shutdown failed");
                }
                true
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "flushing spans at shutdown panicked");
                true
            }
            Err(_) => {
                tracing::warn!(timeout = ?FLUSH_TIMEOUT, "flushing spans at shutdown took too long");
                false
            }
        }
    }
}
