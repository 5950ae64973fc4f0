//! icnd's logs: text (the default) or JSON, one event per line, and a level
//! that changes while the node runs (`kill -USR1 <pid>` switches between
//! the configured filter and `debug`, and back).

use std::sync::Mutex;

use anyhow::{Context, Result};
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
    let registry = tracing_subscriber::registry().with(filter);
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
    })
}

impl Logging {
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
