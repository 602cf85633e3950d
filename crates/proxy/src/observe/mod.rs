//! What the proxy reports about the traffic it handles: access log lines and Prometheus metrics.
