//! Logging and tracing set-up. Logs go to stderr through `tracing` with an env filter
//! (`RUST_LOG`, default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
//! exported over OTLP/gRPC (with the SDK's standard settings: `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`), including one trace per frame
//! ([`crate::frame_trace`]); when it is not, nothing is exported and nothing is attempted.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

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
    EXPORTING.store(true, Ordering::Relaxed);
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(TelemetryGuard {
        tracer_provider: Some(provider),
    })
}

/// Whether spans are exported (an OTLP endpoint was configured and [`init`] succeeded).
/// Per-frame spans ([`crate::frame_trace`]) are only built when they are.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}
