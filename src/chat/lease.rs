//! One long-lived connection for several replicas (Slack Socket Mode, Discord's Gateway): the
//! replica holding a lease in the store connects, the others stand by and take over once it
//! lapses. A platform would spread its events over every open connection, or (Discord) let a
//! second identify end the first session.

use crate::store::Store;
use crate::time::{Clock, Millis};
use std::sync::Arc;
use std::time::Duration;

/// How long a connection lease holds without renewal: another replica takes the connection
/// over within this time after its holder dies.
pub const TTL: Duration = Duration::from_secs(15);

/// A named lease held by `me`.
#[derive(Clone)]
pub struct Lease {
    pub name: &'static str,
    pub me: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
}

impl Lease {
    fn ttl() -> Millis {
        TTL.as_millis() as Millis
    }

    /// Waits until this replica holds the lease (checked every third of [`TTL`]); false when
    /// `stop` fired first. `what` names the connection in the log.
    pub async fn acquire(&self, what: &str, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        let mut waiting_logged = false;
        loop {
            match self.store.lease(self.name, &self.me, self.clock.now(), Self::ttl()).await {
                Ok(true) => return true,
                Ok(false) if !waiting_logged => {
                    tracing::info!("another replica holds the {what}; standing by");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read the {what} lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(TTL / 3) => {}
                _ = stop.changed() => return false,
            }
        }
    }

    /// Renews the lease every third of [`TTL`]; returns why it was lost: another replica took
    /// it, or it could not be renewed for a whole [`TTL`] (this replica may be cut off).
    pub async fn keep(&self) -> &'static str {
        let mut renewed = self.clock.now();
        loop {
            tokio::time::sleep(TTL / 3).await;
            match self.store.lease(self.name, &self.me, self.clock.now(), Self::ttl()).await {
                Ok(true) => renewed = self.clock.now(),
                Ok(false) => return "another replica took the lease",
                Err(e) if self.clock.now() - renewed >= Self::ttl() => {
                    tracing::warn!(lease = self.name, error = %format!("{e:#}"), "cannot renew the lease");
                    return "the lease could not be renewed in time";
                }
                Err(_) => {}
            }
        }
    }

    /// Gives the lease up (on shutdown, or when the connection cannot work at all), so another
    /// replica may take it at once.
    pub async fn release(&self) {
        if let Err(e) = self.store.release(self.name, &self.me).await {
            tracing::warn!(lease = self.name, error = %format!("{e:#}"), "could not release the lease");
        }
    }
}
