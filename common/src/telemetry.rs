//! Logging and tracing set-up. Logs go to stderr through `tracing` with an env filter
//! (`RUST_LOG`, default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
//! exported over OTLP/gRPC; when it is not, nothing is exported and nothing is attempted.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Flushes exported spans when dropped; keep it alive for the life of `main`.
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
    }
}

/// Installs the global subscriber. Must be called inside a Tokio runtime (the OTLP exporter
/// spawns its batch task there).
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);

    let otlp_endpoint = std::env::var(OTLP_ENDPOINT_ENV).ok().filter(|value| !value.is_empty());
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry()
            .with(env_filter)
            .with(fmt_layer)
            .try_init()?;
        return Ok(TelemetryGuard { tracer_provider: None });
    };

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| anyhow::anyhow!("cannot build the OTLP exporter for {endpoint}: {error}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .build();
    let tracer = provider.tracer(service_name);
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_subscriber::registry()
        .with(env_filter)
        .with(fmt_layer)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(TelemetryGuard {
        tracer_provider: Some(provider),
    })
}

/// A W3C `traceparent` for a frame: the current span's when tracing is exported, otherwise
/// fresh random ids, so a frame's records can still be correlated across topics.
pub fn frame_traceparent() -> String {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        return format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        );
    }
    let trace_id: u128 = rand::random::<u128>().max(1);
    let span_id: u64 = rand::random::<u64>().max(1);
    format!("00-{trace_id:032x}-{span_id:016x}-00")
}
