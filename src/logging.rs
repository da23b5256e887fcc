//! The library's own log output, for hosts that are not Rust programs: a C monolith, the Python
//! binding, the CLI. A Rust host installs its own `tracing` subscriber and never calls this.
//!
//! `DUALWRITE_LOG` is the filter (`tracing` EnvFilter syntax: `debug`, `dualwrite=info,warn`,
//! `off`; default `warn`). Each event goes to the host's callback when one is set
//! ([`set_callback`]: `dw_set_log_callback` in C, the `logging` module in Python), else to stderr
//! as one line, in `DUALWRITE_LOG_FORMAT=text` (default) or `json`.
//!
//! Written as a small `tracing` layer rather than with `tracing-subscriber`'s fmt and json
//! layers: the callback needs a layer of its own anyway, and the same visitor then gives stderr
//! both formats without the json feature's extra dependencies.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Once, RwLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const LOG_ENV: &str = "DUALWRITE_LOG";
pub const LOG_FORMAT_ENV: &str = "DUALWRITE_LOG_FORMAT";

/// Receives each event that passes the filter: its level, its target (the module, e.g.
/// `dualwrite::replicator`) and its text (the message, then `key=value` fields). Called on the
/// thread that logged: the caller's, or one of the library's own (the replicator, the flag
/// watcher), possibly on several at once.
pub type LogCallback = Box<dyn Fn(Level, &str, &str) + Send + Sync>;

/// Read while an event is delivered, written by [`set_callback`]: once `set_callback` returns,
/// no call to the previous callback is running or will start, so a host may free what the old
/// callback used.
static CALLBACK: RwLock<Option<LogCallback>> = RwLock::new(None);
static INSTALL: Once = Once::new();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// Install the library's subscriber as the process's global default, once, reading
/// `DUALWRITE_LOG` and `DUALWRITE_LOG_FORMAT` then. Does nothing when the process already has
/// a global subscriber (a Rust host's own, which then receives the library's events).
pub fn install_from_env() {
    INSTALL.call_once(|| {
        let (filter, bad_filter) = match std::env::var(LOG_ENV) {
            Ok(v) => match EnvFilter::try_new(&v) {
                Ok(f) => (f, None),
                Err(e) => (
                    EnvFilter::new("warn"),
                    Some(format!("{LOG_ENV}={v:?} is not a filter ({e}); using warn")),
                ),
            },
            Err(_) => (EnvFilter::new("warn"), None),
        };
        let (format, bad_format) = match std::env::var(LOG_FORMAT_ENV).as_deref() {
            Err(_) | Ok("") | Ok("text") => (Format::Text, None),
            Ok("json") => (Format::Json, None),
            Ok(other) => {
                (Format::Text, Some(format!("{LOG_FORMAT_ENV}={other:?}: use text or json; using text")))
            }
        };
        let subscriber = tracing_subscriber::registry().with(HostLayer { format }.with_filter(filter));
        // try_init also forwards the `log` crate's records (the postgres driver logs with it),
        // as the CLI's subscriber always did.
        if subscriber.try_init().is_ok() {
            for warning in [bad_filter, bad_format].into_iter().flatten() {
                tracing::warn!("{warning}");
            }
        }
    });
}

/// Send the library's events to `callback` instead of stderr (`None`: back to stderr).
/// Installs the subscriber first if needed. Must not be called from inside a callback.
pub fn set_callback(callback: Option<LogCallback>) {
    install_from_env();
    *CALLBACK.write().unwrap_or_else(|p| p.into_inner()) = callback;
}

struct HostLayer {
    format: Format,
}

/// The message and the other fields of one event.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }
}

impl Fields {
    /// `message key=value key2="value with spaces"`.
    fn text(&self) -> String {
        let mut out = self.message.clone();
        for (k, v) in &self.rest {
            let quoted = v.is_empty() || v.contains(char::is_whitespace) || v.contains('"');
            let _ = if quoted { write!(out, " {k}={v:?}") } else { write!(out, " {k}={v}") };
        }
        out
    }
}

impl<S: Subscriber> Layer<S> for HostLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let callback = CALLBACK.read().unwrap_or_else(|p| p.into_inner());
        if let Some(cb) = callback.as_ref() {
            cb(*meta.level(), meta.target(), &fields.text());
            return;
        }
        drop(callback);
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let line = match self.format {
            Format::Text => format!("{now} {:>5} {}: {}\n", meta.level(), meta.target(), fields.text()),
            Format::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), now.to_string().into());
                obj.insert("level".into(), meta.level().as_str().into());
                obj.insert("target".into(), meta.target().into());
                obj.insert("message".into(), fields.message.clone().into());
                for (k, v) in &fields.rest {
                    obj.insert((*k).into(), v.clone().into());
                }
                format!("{}\n", serde_json::Value::Object(obj))
            }
        };
        // One write per line, so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_render_as_message_then_key_values_quoted_when_needed() {
        let f = Fields {
            message: "batch failed".into(),
            rest: vec![
                ("table", "users".into()),
                ("error", "connection refused".into()),
                ("empty", String::new()),
            ],
        };
        assert_eq!(f.text(), r#"batch failed table=users error="connection refused" empty="""#);
    }
}
