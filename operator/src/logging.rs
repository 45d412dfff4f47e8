//! Logging for Serin's binaries: tracing to stderr, as text or JSON, filtered by `RUST_LOG`
//! (default `info`), with colours only on a terminal.
//!
//! Every line logged while reconciling a Rollout is inside the reconciler's `reconcile` span,
//! whose fields are `rollout` and `namespace`. Text lines show them as a prefix
//! (`reconcile{rollout=web namespace=shop}: ...`); JSON lines carry them in `span` (the current
//! span's fields) and in `spans` (every enclosing span, outermost first), next to the event's
//! own fields, which are flattened to the top level.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber, writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Err only when a subscriber is already installed, which then serves.
    let _ = subscriber(format, filter, ansi, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync + 'static>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => {
            Box::new(builder.json().flatten_event(true).with_current_span(true).with_span_list(true).finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn lines(format: LogFormat, log: impl FnOnce()) -> Vec<String> {
        let buffer = Buffer::default();
        let subscriber = subscriber(format, EnvFilter::new("debug"), false, buffer.clone());
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(String::from).collect()
    }

    /// Logs as the reconciler does: inside a `reconcile` span with the Rollout's name and
    /// namespace, once directly and once from a nested span.
    fn reconcile_like() {
        let span = tracing::info_span!("reconcile", rollout = "web", namespace = "shop");
        let _entered = span.enter();
        tracing::info!(reason = "StepAdvanced", "transition");
        let nested = tracing::debug_span!("metrics", source = "prometheus");
        let _nested = nested.enter();
        tracing::warn!(error = "timeout", "no metrics for this check");
    }

    #[test]
    fn json_lines_carry_the_rollout_and_namespace_of_the_reconcile() {
        let lines = lines(LogFormat::Json, reconcile_like);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["message"], "transition");
        assert_eq!(first["reason"], "StepAdvanced", "event fields are flattened");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["span"]["name"], "reconcile");
        assert_eq!(first["span"]["rollout"], "web");
        assert_eq!(first["span"]["namespace"], "shop");
        // Inside a nested span, the current span is the inner one; the reconcile's fields are
        // still on the line, in `spans`.
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["span"]["name"], "metrics");
        let spans = second["spans"].as_array().unwrap();
        assert_eq!(spans[0]["name"], "reconcile");
        assert_eq!(spans[0]["rollout"], "web");
        assert_eq!(spans[0]["namespace"], "shop");
    }

    #[test]
    fn text_lines_are_prefixed_with_the_reconcile_span() {
        let lines = lines(LogFormat::Text, reconcile_like);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in &lines {
            assert!(line.contains("reconcile{rollout=\"web\" namespace=\"shop\"}"), "{line}");
        }
    }
}
