//! One long-lived connection for several replicas (Slack Socket Mode, Discord's Gateway): the
//! replica holding a lease in the store connects, the others stand by and take over once it
//! lapses. A platform would spread its events over every open connection, or (Discord) let a
//! second identify end the first session.

use crate::store::Store;
use crate::time::{Clock, Millis};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::Mutex;
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

    /// Holds `conn` while this replica holds the lease: connects, and connects again after each
    /// end (after the wait it asks for) until `stop`, or until it ends for good; `health` shows
    /// where it stands. `what` names the connection in the log.
    pub async fn hold(
        &self,
        what: &str,
        health: &Health,
        conn: &mut dyn Connection,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            health.set(State::StandingBy);
            if !self.acquire(what, stop).await {
                return;
            }
            health.set(State::Connecting);
            let ended = tokio::select! {
                ended = conn.connect() => ended,
                why = self.keep() => Ended::Again { why: why.to_string(), wait: Duration::from_millis(500) },
                _ = stop.changed() => return self.release().await,
            };
            let wait = match ended {
                Ended::Fatal(why) => {
                    tracing::error!(reason = %why, "{what} stopped");
                    health.set(State::Stopped(why));
                    // Another replica would fail alike; the rest of medic goes on.
                    self.release().await;
                    return;
                }
                Ended::Again { why, wait } => {
                    tracing::warn!(reason = %why, "{what} disconnected");
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return self.release().await,
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

/// A long-lived connection a lease holds ([`Lease::hold`]).
#[async_trait::async_trait]
pub trait Connection: Send {
    /// One connection, from its opening to its end.
    async fn connect(&mut self) -> Ended;
}

/// How a connection ended.
pub enum Ended {
    /// Connect again after `wait`.
    Again { why: String, wait: Duration },
    /// Do not retry (a refused token, a setting the platform refuses), and why.
    Fatal(String),
}

/// The wait before connecting again after `failures` connections in a row that failed.
pub fn reconnect_wait(failures: i64) -> Duration {
    match failures {
        0 => Duration::from_millis(500),
        n => Duration::from_millis(crate::chat::outbox::backoff(n) as u64),
    }
}

/// Where this replica's long-lived connection stands, for `/readyz`.
#[derive(Default)]
pub struct Health(Mutex<Option<State>>);

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    StandingBy,
    Connecting,
    Connected,
    /// Stopped for good (a close code retrying cannot mend), and why.
    Stopped(String),
}

impl Health {
    pub fn set(&self, s: State) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// `None` when this medic has no such connection.
    pub fn get(&self) -> Option<State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// For `/readyz`: the state, and the reason when stopped.
    pub fn to_json(&self) -> Value {
        match self.get() {
            None => Value::Null,
            Some(State::StandingBy) => json!({"state": "standing_by"}),
            Some(State::Connecting) => json!({"state": "connecting"}),
            Some(State::Connected) => json!({"state": "connected"}),
            Some(State::Stopped(why)) => json!({"state": "stopped", "reason": why}),
        }
    }
}
