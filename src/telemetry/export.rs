//! Whether and how spans leave the process: the standard `OTEL_*` variables, read once at
//! start. The exporter itself reads the rest of them (headers, timeout, compression, batch
//! sizes, sampler).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::error::TelemetryError;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (tonic), port 4317 by convention: the default.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (hyper, plain `http://` only), port 4318.
    HttpProtobuf,
}

/// Span export as the environment asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    pub protocol: Protocol,
}

impl ExportSettings {
    /// `None` (no exporter) unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and not empty; `OTEL_SDK_DISABLED=true` and
    /// `OTEL_TRACES_EXPORTER=none` turn it off too. `var` reads one variable.
    ///
    /// # Errors
    /// A protocol other than `grpc` or `http/protobuf`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, TelemetryError> {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        if set(ENDPOINT).is_none() && set(TRACES_ENDPOINT).is_none() {
            return Ok(None);
        }
        if set(SDK_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || set(TRACES_EXPORTER).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let (variable, value) = match set(TRACES_PROTOCOL) {
            Some(value) => (TRACES_PROTOCOL, value),
            None => (PROTOCOL, set(PROTOCOL).unwrap_or_else(|| "grpc".into())),
        };
        let protocol = match value.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            _ => return Err(TelemetryError::UnsupportedProtocol { variable, value }),
        };
        Ok(Some(Self { protocol }))
    }
}

/// `service.name` when the environment names none: `remotemedia-<role>`.
pub(super) fn default_service_name(
    role: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let named = var(SERVICE_NAME).is_some_and(|v| !v.trim().is_empty())
        || var(RESOURCE_ATTRIBUTES).is_some_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    (!named).then(|| format!("remotemedia-{role}"))
}

/// The tracer provider: batch export on the tokio runtime when `export` is set, else spans
/// that only carry ids (for JSON logs) and go nowhere. Must run inside the tokio runtime.
pub(super) fn tracer_provider(
    role: &str,
    export: Option<&ExportSettings>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let env = |name: &str| std::env::var(name).ok();
    // `builder()` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut resource = Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "remotemedia.role",
            role.to_owned(),
        ));
    if let Some(name) = default_service_name(role, env) {
        resource = resource.with_service_name(name);
    }
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the SDK's
    // default configuration reads them); parent-based always-on when unset.
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(export) = export {
        let exporter = match export.protocol {
            Protocol::Grpc => SpanExporter::builder().with_tonic().build()?,
            Protocol::HttpProtobuf => SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()?,
        };
        // Batches are exported by a task on this tokio runtime (OTEL_BSP_* tune it).
        builder = builder
            .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build());
    }
    Ok(builder.build())
}

/// The tracer the `tracing` layer records spans with.
pub(super) fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer("remotemedia-webrtc")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<ExportSettings>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ExportSettings::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_endpoint_means_no_exporter_whatever_else_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        let others = [
            (PROTOCOL, "grpc"),
            (SERVICE_NAME, "x"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
            (ENDPOINT, "  "),
        ];
        assert_eq!(settings(&others).unwrap(), None);
        let off = [(ENDPOINT, "http://c:4317"), (SDK_DISABLED, "true")];
        assert_eq!(settings(&off).unwrap(), None);
        let none = [(ENDPOINT, "http://c:4317"), (TRACES_EXPORTER, "none")];
        assert_eq!(settings(&none).unwrap(), None);
    }

    #[test]
    fn an_endpoint_exports_over_grpc_unless_http_is_asked_for() {
        let grpc = settings(&[(ENDPOINT, "http://c:4317")]).unwrap().unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        let traces_only = settings(&[(TRACES_ENDPOINT, "http://c:4317")]).unwrap();
        assert_eq!(traces_only.unwrap().protocol, Protocol::Grpc);
        let http = settings(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "http/protobuf")]);
        assert_eq!(http.unwrap().unwrap().protocol, Protocol::HttpProtobuf);
        // The per-signal variable wins.
        let both = settings(&[
            (ENDPOINT, "http://c:4317"),
            (PROTOCOL, "http/protobuf"),
            (TRACES_PROTOCOL, "grpc"),
        ]);
        assert_eq!(both.unwrap().unwrap().protocol, Protocol::Grpc);
        assert!(matches!(
            settings(&[(ENDPOINT, "http://c:4318"), (PROTOCOL, "http/json")]),
            Err(TelemetryError::UnsupportedProtocol { .. })
        ));
    }

    #[test]
    fn the_service_is_named_after_the_role_unless_the_environment_names_it() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            default_service_name("worker", vars(&[])).as_deref(),
            Some("remotemedia-worker")
        );
        assert_eq!(
            default_service_name("worker", vars(&[(SERVICE_NAME, "w")])),
            None
        );
        let attributes = &[(RESOURCE_ATTRIBUTES, "team=media, service.name=w")];
        assert_eq!(default_service_name("worker", vars(attributes)), None);
        let other = &[(RESOURCE_ATTRIBUTES, "team=media")];
        assert!(default_service_name("frontend", vars(other)).is_some());
    }
}
