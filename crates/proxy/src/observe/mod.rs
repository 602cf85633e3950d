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
