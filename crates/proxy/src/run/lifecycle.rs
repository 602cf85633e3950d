//! The start-up and shutdown pieces every kind of proxy process shares (the sidecar and the plain
//! forwarder): telemetry from the mesh config, and one signal that tells every listener to drain.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::state::StateHandle;
use crate::telemetry::Telemetry;

/// The access log that `meshConfig.accessLogFile/Encoding/Format` asks for (a setting it cannot
/// honour is logged as a warning, not fatal: traffic matters more than its log) and fresh
/// metrics, both fed by one [`Telemetry`].
pub(crate) fn telemetry_for(state: &Arc<StateHandle>) -> (Telemetry, Arc<Metrics>) {
    let initial = state.load();
    let settings = initial.inbound.settings();
    let (access_log, warning) = AccessLog::from_mesh_config(
        &settings.access_log_file,
        &settings.access_log_encoding,
        &settings.access_log_format,
    );
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::new());
    let telemetry = Telemetry::new(Arc::new(access_log), metrics.clone(), state.clone());
    (telemetry, metrics)
}

/// One stop signal for all of a process's listeners: each takes a [`Drain::stopped`] future
/// and drains when [`Drain::start`] is called.
pub(crate) struct Drain {
    tx: watch::Sender<bool>,
}

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }

    /// Resolves once [`Drain::start`] has been called.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Tells every listener to stop accepting and drain.
    pub(crate) fn start(&self) {
        self.tx.send_replace(true);
    }
}
