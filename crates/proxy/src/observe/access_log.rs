//! The access-log sink: MeshConfig `accessLogFile`, `accessLogEncoding`, `accessLogFormat`.
//!
//! Lines are rendered on the caller's thread and handed to one writer thread over a bounded
//! queue of [`AccessLog::QUEUE_LINES`] lines. The hot path never blocks and never waits for the
//! disk: when the queue is full (the disk or the terminal cannot keep up) the line is dropped and
//! counted (`meshward_access_log_dropped_lines_total` once [`AccessLog::with_drop_counter`] is
//! given the metrics counter; [`AccessLog::dropped`] in any case). One writer means whole lines
//! never interleave; it writes through a buffer and flushes whenever the queue runs empty, so
//! lines reach the file promptly when idle and in batches under load.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::observe::format::{Encoding, FormatError, LogFormat};
use crate::observe::record::RequestRecord;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The process's standard output (`accessLogFile: /dev/stdout`).
    Stdout,
    /// A file, opened for appending (created if absent).
    File(PathBuf),
}

/// Why the access log is not configured exactly as asked. The log still works (with Istio's
/// default format) unless the warning is [`AccessLogWarning::OpenFailed`].
#[derive(Debug, thiserror::Error)]
pub enum AccessLogWarning {
    /// The file could not be opened: access logging is off.
    #[error("cannot open access log file {path}: {error}; access logging is off")]
    OpenFailed {
        /// `accessLogFile`.
        path: String,
        /// The error.
        error: io::Error,
    },
    /// `accessLogFormat` is not a valid format for the encoding: Istio's default is used.
    #[error(
        "accessLogFormat is not a valid {} format ({problem}); using Istio's default {} format",
        encoding.as_str(),
        encoding.as_str()
    )]
    InvalidFormat {
        /// The encoding the format was read as.
        encoding: Encoding,
        /// What is wrong.
        problem: String,
    },
    /// `accessLogEncoding` is neither `TEXT` nor `JSON`: TEXT is used.
    #[error("accessLogEncoding {0:?} is neither TEXT nor JSON; using TEXT")]
    UnknownEncoding(String),
}

enum Message {
    Line(String),
    /// Flush the buffer, then answer.
    Flush(SyncSender<()>),
}

/// The access log. Cheap to share behind an `Arc`; [`AccessLog::log`] takes `&self`.
pub struct AccessLog {
    /// `None`: logging is off.
    queue: Option<SyncSender<Message>>,
    format: LogFormat,
    dropped: Arc<AtomicU64>,
    drop_counter: Option<Counter>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.is_enabled())
            .field("encoding", &self.format.encoding())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AccessLog {
    /// Lines that may wait for the writer before new ones are dropped.
    pub const QUEUE_LINES: usize = 4096;

    /// An access log that writes nothing (`accessLogFile: ""`, the Istio default).
    pub fn disabled() -> Self {
        AccessLog {
            queue: None,
            format: LogFormat::istio_default_text(),
            dropped: Arc::default(),
            drop_counter: None,
        }
    }

    /// Builds the access log from the three MeshConfig fields (authentication.md §6.1):
    /// `file` `""` ⇒ off, `/dev/stdout` ⇒ standard output, anything else ⇒ that file, appended
    /// to; `encoding` `TEXT` (also `""`) or `JSON`; `format` `""` ⇒ Istio's default for the
    /// encoding. A format that does not parse falls back to Istio's default, as istiod does
    /// ("unparsable ⇒ default JSON used"), and the warning says why.
    pub fn from_mesh_config(
        file: &str,
        encoding: &str,
        format: &str,
    ) -> (AccessLog, Option<AccessLogWarning>) {
        if file.is_empty() {
            return (AccessLog::disabled(), None);
        }
        let (format, format_warning) = mesh_format(encoding, format);
        let destination = if file == "/dev/stdout" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(file))
        };
        match AccessLog::new(destination, format) {
            Ok(log) => (log, format_warning),
            Err(error) => (
                AccessLog::disabled(),
                Some(AccessLogWarning::OpenFailed {
                    path: file.to_owned(),
                    error,
                }),
            ),
        }
    }

    /// An access log writing `format` lines to `destination`. Starts the writer thread.
    pub fn new(destination: Destination, format: LogFormat) -> io::Result<Self> {
        let writer: Box<dyn Write + Send> = match destination {
            Destination::Stdout => Box::new(io::stdout()),
            Destination::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (tx, rx) = mpsc::sync_channel(Self::QUEUE_LINES);
        std::thread::Builder::new()
            .name("meshward-access-log".to_owned())
            .spawn(move || write_lines(rx, writer))?;
        Ok(AccessLog {
            queue: Some(tx),
            format,
            dropped: Arc::default(),
            drop_counter: None,
        })
    }

    /// Also counts dropped lines in `counter` (the metrics' dropped-lines counter).
    pub fn with_drop_counter(mut self, counter: Counter) -> Self {
        self.drop_counter = Some(counter);
        self
    }

    /// Is anything written?
    pub fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// The format lines are rendered with; its
    /// [`request_header_names`](LogFormat::request_header_names) say which headers a
    /// [`RequestRecord`] needs.
    pub fn format(&self) -> &LogFormat {
        &self.format
    }

    /// Logs one request or connection. Never blocks: the line is dropped (and counted) if the
    /// writer is behind by [`AccessLog::QUEUE_LINES`] lines.
    pub fn log(&self, record: &RequestRecord) {
        let Some(queue) = &self.queue else {
            return;
        };
        let line = self.format.render(record);
        match queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(counter) = &self.drop_counter {
                    counter.inc();
                }
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every line logged before the call is written and flushed, for at most
    /// `timeout`. Blocks the calling thread: meant for shutdown and tests, not for request
    /// handling. Returns whether the flush completed.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(queue) = &self.queue else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        // The marker queues behind every line already sent. A full queue is retried rather than
        // waited on with a blocking send, which could outlive `timeout` if the writer is stuck.
        let mut marker = Message::Flush(ack_tx);
        loop {
            match queue.try_send(marker) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    marker = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// The format for `accessLogEncoding`/`accessLogFormat`, with the fallback warning if any.
fn mesh_format(encoding: &str, format: &str) -> (LogFormat, Option<AccessLogWarning>) {
    let (encoding, encoding_warning) = match encoding {
        "" | "TEXT" => (Encoding::Text, None),
        "JSON" => (Encoding::Json, None),
        other => (
            Encoding::Text,
            Some(AccessLogWarning::UnknownEncoding(other.to_owned())),
        ),
    };
    let parsed: Result<LogFormat, String> = match (encoding, format.is_empty()) {
        (Encoding::Text, true) => Ok(LogFormat::istio_default_text()),
        (Encoding::Json, true) => Ok(LogFormat::istio_default_json()),
        (Encoding::Text, false) => LogFormat::parse_text(format).map_err(|e| e.to_string()),
        (Encoding::Json, false) => match serde_json::from_str::<serde_json::Value>(format) {
            Ok(serde_json::Value::Object(map)) => {
                LogFormat::parse_json(&map).map_err(|e: FormatError| e.to_string())
            }
            Ok(_) => Err("not a JSON object".to_owned()),
            Err(e) => Err(format!("not JSON: {e}")),
        },
    };
    match parsed {
        Ok(format) => (format, encoding_warning),
        Err(problem) => {
            let default = match encoding {
                Encoding::Text => LogFormat::istio_default_text(),
                Encoding::Json => LogFormat::istio_default_json(),
            };
            (
                default,
                Some(AccessLogWarning::InvalidFormat { encoding, problem }),
            )
        }
    }
}

/// The writer thread: runs until every [`AccessLog`] sender is gone, then flushes and exits.
fn write_lines(rx: Receiver<Message>, writer: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, writer);
    let mut reported = false;
    let mut report = |result: io::Result<()>| {
        // One warning, not one per line: a full disk would otherwise flood the proxy's own log.
        if let Err(e) = result
            && !reported
        {
            reported = true;
            tracing::warn!(error = %e, "access log write failed; further failures are not reported");
        }
    };
    while let Ok(first) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => report(out.write_all(line.as_bytes())),
                Message::Flush(ack) => acks.push(ack),
            }
            next = rx.try_recv().ok();
        }
        report(out.flush());
        for ack in acks {
            let _ = ack.try_send(());
        }
    }
    report(out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::record::AuthzOutcome;

    fn record(code: u16) -> RequestRecord {
        let mut r = RequestRecord::new("2024-05-01T00:00:00Z".parse().unwrap());
        r.response_code = code;
        r.authz = Some(AuthzOutcome::Allow);
        r
    }

    #[test]
    fn empty_file_is_off() {
        let (log, warning) = AccessLog::from_mesh_config("", "JSON", "garbage");
        assert!(!log.is_enabled());
        assert!(warning.is_none());
        log.log(&record(200));
        assert!(log.flush(Duration::from_secs(1)));
    }

    #[test]
    fn file_is_appended_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "existing\n").unwrap();
        let (log, warning) =
            AccessLog::from_mesh_config(path.to_str().unwrap(), "TEXT", "%RESPONSE_CODE%");
        assert!(warning.is_none());
        let log = Arc::new(log);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        log.log(&record(200 + t * 100 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(log.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 201);
        assert_eq!(lines[0], "existing");
        for line in &lines[1..] {
            let (code, rest) = line.split_once(' ').unwrap();
            assert!(code.parse::<u16>().is_ok(), "{line}");
            assert_eq!(rest, "authz=allow policy=- reason=\"-\"");
        }
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn invalid_text_format_falls_back_with_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (log, warning) = AccessLog::from_mesh_config(path.to_str().unwrap(), "TEXT", "%BOGUS%");
        let warning = warning.unwrap().to_string();
        assert!(warning.contains("%BOGUS%"), "{warning}");
        assert!(warning.contains("Istio's default TEXT"), "{warning}");
        assert_eq!(log.format(), &LogFormat::istio_default_text());
    }

    #[test]
    fn json_encoding_and_fallbacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let p = path.to_str().unwrap();
        let (log, warning) =
            AccessLog::from_mesh_config(p, "JSON", r#"{"code":"%RESPONSE_CODE%"}"#);
        assert!(warning.is_none());
        log.log(&record(404));
        assert!(log.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"authz_decision\":\"allow\",\"authz_policy\":null,\"authz_reason\":null,\"code\":404}\n"
        );

        for bad in ["not json", "[]", "\"{}\""] {
            let (log, warning) = AccessLog::from_mesh_config(p, "JSON", bad);
            assert!(
                matches!(warning, Some(AccessLogWarning::InvalidFormat { .. })),
                "{bad}"
            );
            assert_eq!(log.format(), &LogFormat::istio_default_json());
        }
        let (log, _) = AccessLog::from_mesh_config(p, "JSON", "");
        assert_eq!(log.format(), &LogFormat::istio_default_json());
        let (log, warning) = AccessLog::from_mesh_config(p, "YAML", "");
        assert!(matches!(
            warning,
            Some(AccessLogWarning::UnknownEncoding(_))
        ));
        assert_eq!(log.format().encoding(), Encoding::Text);
    }

    #[test]
    fn unopenable_file_turns_logging_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("a.log");
        let (log, warning) = AccessLog::from_mesh_config(path.to_str().unwrap(), "TEXT", "");
        assert!(!log.is_enabled());
        assert!(matches!(warning, Some(AccessLogWarning::OpenFailed { .. })));
    }

    #[test]
    fn full_queue_drops_and_counts() {
        // A writer that never drains: the queue fills and further lines are dropped.
        let (tx, _rx) = mpsc::sync_channel(2);
        let counter = Counter::default();
        let log = AccessLog {
            queue: Some(tx),
            format: LogFormat::istio_default_text(),
            dropped: Arc::default(),
            drop_counter: None,
        }
        .with_drop_counter(counter.clone());
        for _ in 0..5 {
            log.log(&record(200));
        }
        assert_eq!(log.dropped(), 3);
        assert_eq!(counter.get(), 3);
    }
}
