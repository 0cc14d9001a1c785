//! Stopping the server: what asks for it ([`signal`]), how the parts that
//! run on their own (connections, the guest watcher, the converter) hear of
//! it ([`Stop`]), and how long open connections are waited for ([`drain`]).
//!
//! The order, run by `server::serve`: the listener closes, [`Trigger::stop`]
//! tells every connection to finish its request in flight and close, the
//! watcher and the converter to return, and [`drain`] gives the connections
//! the request timeout before it closes whatever is still open.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// Resolves on Ctrl-C or SIGTERM: the shutdown future `blockreg serve`
/// passes to [`serve`](crate::serve).
pub async fn signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { terminate.as_mut()?.recv().await } => {}
    }
    tracing::info!("shutdown requested");
}

/// Creates a trigger and the [`Stop`] its listeners clone.
pub(crate) fn channel() -> (Trigger, Stop) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Stop(receiver))
}

/// The sending side: the server pulls it once.
pub(crate) struct Trigger(watch::Sender<bool>);

impl Trigger {
    /// Tells every [`Stop`] to stop.
    pub(crate) fn stop(&self) {
        // Sent even with no receiver left: there is then nothing to tell.
        let _ = self.0.send(true);
    }
}

/// The listening side, one clone per task that must stop.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Whether the stop was asked for already.
    pub(crate) fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the stop is asked for (or the trigger is gone).
    pub(crate) async fn stopped(&mut self) {
        // The `Ref` that `wait_for` returns holds a lock guard, which must
        // not live across the caller's `select!`.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Waits up to `grace` for the tasks in `connections` to end, then aborts
/// the rest.
pub(crate) async fn drain(connections: &mut JoinSet<()>, grace: Duration) {
    tracing::info!(
        "shutting down: waiting for {} connection(s)",
        connections.len()
    );
    let all_ended = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all_ended).await.is_err() {
        tracing::warn!(
            "shutdown: closing {} connection(s) still open",
            connections.len()
        );
        connections.shutdown().await;
    }
}
