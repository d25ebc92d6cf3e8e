//! Why logging or trace export could not be set up.

/// Why [`super::Telemetry::install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("{variable}={value:?} is not supported (use \"grpc\" or \"http/protobuf\")")]
    UnsupportedProtocol {
        variable: &'static str,
        value: String,
    },
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}
