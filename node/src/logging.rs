//! icnd's logs: text (the default) or JSON, one event per line, and a level
//! that changes while the node runs (`kill -USR1 <pid>` switches between
//! the configured filter and `debug`, and back). With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans (HTTP requests, commits, sync
//! sessions) are also exported as OTLP traces over HTTP (protobuf), under
//! `OTEL_SERVICE_NAME` (`icnd` when unset).

use std::sync::Mutex;

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// How each log event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the
    /// message and the event's fields at the top level.
    Json,
}

/// The installed logger, whose level can be switched.
pub struct Logging {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The configured filter, and whether `debug` is on instead of it.
    state: Mutex<(String, bool)>,
    /// The OTLP exporter's pipeline, when one is configured.
    traces: Option<SdkTracerProvider>,
}

/// The OTLP trace pipeline `OTEL_EXPORTER_OTLP_ENDPOINT` asks for, if it
/// does: spans batched and sent over HTTP (protobuf) to
/// `<endpoint>/v1/traces` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
fn otlp_traces() -> Result<Option<SdkTracerProvider>> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    // The exporter's HTTP client speaks TLS to an `https://` collector
    // with the process's rustls provider (ring, as the rest of icnd).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The exporter's blocking HTTP client may not be made on an async
    // thread; it lives on the batch processor's own thread after this.
    let exporter = std::thread::spawn(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("configuring the OTLP trace exporter panicked"))?
    .context("configuring the OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("icnd");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Installs the global logger: `RUST_LOG` if set, else `level`.
pub fn init(level: &str, format: LogFormat) -> Result<Logging> {
    let configured = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| level.to_owned());
    let filter = EnvFilter::try_new(&configured)
        .with_context(|| format!("{configured:?} is not a log level or filter"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let traces = otlp_traces()?;
    let spans = traces
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("icnd")));
    let registry = tracing_subscriber::registry().with(filter).with(spans);
    match format {
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
    }
    .context("installing the logger")?;
    Ok(Logging {
        handle,
        state: Mutex::new((configured, false)),
        traces,
    })
}

impl Logging {
    /// Sends the spans not exported yet and stops the exporter; at exit.
    pub fn shutdown(&self) {
        if let Some(traces) = &self.traces
            && let Err(e) = traces.shutdown()
        {
            tracing::warn!(error = %e, "exporting the last traces failed");
        }
    }

    /// Switches between the configured filter and `debug`; answers the
    /// filter now in force.
    pub fn toggle(&self) -> Result<String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("the log level lock is poisoned"))?;
        let debug = !state.1;
        let now = if debug {
            "debug".to_owned()
        } else {
            state.0.clone()
        };
        let filter = EnvFilter::try_new(&now)?;
        self.handle
            .reload(filter)
            .context("changing the log level")?;
        state.1 = debug;
        Ok(now)
    }
}
