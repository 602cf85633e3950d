//! Graceful shutdown: stop accepting, let connections in flight finish for a bounded time, then
//! close what is left. Every connection task holds a [`Drain`]; the listener waits until all of
//! them are gone.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Where shutdown is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Finish what is in flight; HTTP connections stop taking new requests.
    Draining,
    /// Close now.
    Closed,
}

/// A connection's view of shutdown. Dropping the last one tells the listener all are done.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    phase: watch::Receiver<Phase>,
    _alive: mpsc::Sender<()>,
}

impl Drain {
    /// Resolves once shutdown has begun.
    pub(crate) async fn draining(&mut self) {
        let _ = self.phase.wait_for(|p| *p >= Phase::Draining).await;
    }

    /// Resolves once the drain time is over (connections must close).
    pub(crate) async fn closed(&mut self) {
        let _ = self.phase.wait_for(|p| *p >= Phase::Closed).await;
    }
}

/// The listener's side.
#[derive(Debug)]
pub(crate) struct DrainControl {
    phase: watch::Sender<Phase>,
    alive_tx: Option<mpsc::Sender<()>>,
    alive_rx: mpsc::Receiver<()>,
}

impl DrainControl {
    pub(crate) fn new() -> Self {
        let (phase, _) = watch::channel(Phase::Running);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        Self {
            phase,
            alive_tx: Some(alive_tx),
            alive_rx,
        }
    }

    /// A handle for a task.
    pub(crate) fn handle(&self) -> Option<Drain> {
        self.alive_tx.as_ref().map(|alive| Drain {
            phase: self.phase.subscribe(),
            _alive: alive.clone(),
        })
    }

    /// Signals draining, waits up to `grace` for every task to finish, then tells the rest to
    /// close and waits up to `grace` again for them to go.
    pub(crate) async fn shutdown(mut self, grace: Duration) {
        self.phase.send_replace(Phase::Draining);
        self.alive_tx = None;
        if tokio::time::timeout(grace, self.alive_rx.recv())
            .await
            .is_ok()
        {
            return;
        }
        self.phase.send_replace(Phase::Closed);
        let _ = tokio::time::timeout(grace, self.alive_rx.recv()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_tasks_then_forces_close() {
        let control = DrainControl::new();
        let mut quick = control.handle().unwrap();
        let mut stubborn = control.handle().unwrap();
        let q = tokio::spawn(async move { quick.draining().await });
        let s = tokio::spawn(async move { stubborn.closed().await });
        let started = std::time::Instant::now();
        control.shutdown(Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        q.await.unwrap();
        s.await.unwrap();
    }
}
