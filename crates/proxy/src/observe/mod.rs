//! What the proxy reports about the traffic it handles: access log lines and Prometheus metrics.
//!
//! * [`record`]: the data one access-log line can name, filled by the proxy per request.
//! * [`format`](mod@format): Envoy format strings (TEXT and JSON), parsed once and rendered
//!   per record.
//! * [`access_log`]: the MeshConfig `accessLogFile` sink.
//! * [`metrics`]: Istio's standard metrics and meshward's own.
//! * [`admin`]: the admin HTTP server (`/ready`, `/stats/prometheus`, `/config_dump`, `/certs`).

pub mod access_log;
pub mod admin;
pub mod format;
pub mod metrics;
pub mod record;

/// `Display` for an optional value: `-` when absent, as Envoy prints a missing operator.
pub(crate) struct OptDisplay<'a, T>(pub(crate) Option<&'a T>);

impl<T: std::fmt::Display> std::fmt::Display for OptDisplay<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}
