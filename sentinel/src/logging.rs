//! Logs and traces. Logs go to stderr, as text or as JSON lines
//! (`SENTINEL_LOG_FORMAT=json`), filtered by `SENTINEL_LOG`; every line inside
//! a request carries its request id and every line inside a step its run,
//! node and step, from the spans around them.
//!
//! Traces are exported over OTLP/HTTP only when an endpoint is configured
//! with the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_EXPORTER_OTLP_PROTOCOL` is
//! `http/protobuf` by default or `http/json`; `OTEL_SERVICE_NAME` names the
//! service). Each run step is a root span, so one trace per step; each HTTP
//! request is another.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes and stops the trace exporter when dropped.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("sentinel: flushing traces failed: {e}");
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Installs the global subscriber. Keep the guard until the process ends.
pub fn init() -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_env("SENTINEL_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = env("SENTINEL_LOG_FORMAT").is_some_and(|f| f == "json");
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json { fmt.json().with_current_span(true).with_span_list(true).boxed() } else { fmt.boxed() };
    let provider = tracer_provider()?;
    // One filter for logs and traces alike (per-layer filters lost spans of the
    // OpenTelemetry layer in tracing-opentelemetry 0.32, so they are not used).
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("sentinel")));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(Guard(provider))
}

fn tracer_provider() -> anyhow::Result<Option<SdkTracerProvider>> {
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        // The general endpoint is a base URL; the traces path is appended, as the spec says.
        env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    });
    let Some(endpoint) = endpoint else { return Ok(None) };
    let protocol = match env("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some(other) => {
            anyhow::bail!("OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported (http/protobuf or http/json)")
        }
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP exporter: {e}"))?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "sentinel".to_owned());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build()))
}
