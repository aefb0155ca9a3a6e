//! The single writer. Intake handlers [`Pipeline::submit`] validated alerts and wait; the writer
//! task takes every submission that is waiting (up to [`MAX_BATCH`] alerts), commits them in one
//! transaction and then answers each one. A 2xx therefore always follows a commit, and the cost
//! of the commit (an fsync on SQLite) is shared by everything that arrived meanwhile.
//!
//! If a batch fails, each submission in it is retried alone, so one bad submission cannot fail
//! its neighbours. The same task runs the periodic tick that resolves incidents whose grace
//! period has passed. It stops once every [`Pipeline`] handle is dropped and the queue is empty.

use crate::alert::{Alert, Change};
use crate::incident::Policy;
use crate::metrics::Metrics;
use crate::store::{IngestResult, Store};
use crate::time::Clock;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most alerts committed in one transaction.
pub const MAX_BATCH: usize = 4000;
/// Submissions that may wait for the writer before senders wait for room.
const QUEUE: usize = 1024;

pub struct Submission {
    pub alerts: Vec<Alert>,
    pub changes: Vec<Change>,
}

struct Job {
    sub: Submission,
    reply: oneshot::Sender<Result<IngestResult, String>>,
}

#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<Job>,
}

impl Pipeline {
    /// Starts the writer task.
    pub fn start(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        tick_every: Duration,
    ) -> (Pipeline, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer { store, policy, clock, metrics };
        (Pipeline { tx }, tokio::spawn(writer.run(rx, tick_every)))
    }

    /// Stores a submission durably, or says why it could not.
    pub async fn submit(&self, sub: Submission) -> Result<IngestResult, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { sub, reply }).await.map_err(|_| "medic is shutting down".to_string())?;
        rx.await.map_err(|_| "the writer stopped before answering".to_string())?
    }
}

struct Writer {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Job>, tick_every: Duration) {
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                job = rx.recv() => match job {
                    Some(j) => j,
                    None => break,
                },
                _ = tick.tick() => {
                    self.tick().await;
                    continue;
                }
            };
            let mut size = first.sub.alerts.len() + first.sub.changes.len();
            let mut jobs = vec![first];
            while size < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => {
                        size += j.sub.alerts.len() + j.sub.changes.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs).await;
        }
        // Resolve what came due while we were draining, so state is current at exit.
        self.tick().await;
        tracing::info!("writer stopped: queue drained");
    }

    async fn tick(&self) {
        match self.store.tick(self.clock.now(), &self.policy).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(incidents = n, "incidents changed state on tick"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "tick failed; will retry"),
        }
    }

    async fn commit(&self, mut jobs: Vec<Job>) {
        let started = std::time::Instant::now();
        let batch = jobs.len();
        // Move the submissions into one batch (no copy); `shape` splits the results back, and
        // the same vectors serve the one-by-one retry if the batch fails.
        let shape: Vec<(usize, usize)> = jobs.iter().map(|j| (j.sub.alerts.len(), j.sub.changes.len())).collect();
        let alerts: Vec<Alert> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.sub.alerts)).collect();
        let changes: Vec<Change> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.sub.changes)).collect();
        match self.store.ingest(&alerts, &changes, self.clock.now(), &self.policy).await {
            Ok(mut all) => {
                self.metrics.observe_commit(started.elapsed(), batch);
                for (job, (na, nc)) in jobs.into_iter().zip(shape) {
                    let part = IngestResult {
                        outcomes: all.outcomes.drain(..na).collect(),
                        incidents: all.incidents.drain(..na).collect(),
                        changes_new: all.changes_new.drain(..nc).collect(),
                    };
                    let _ = job.reply.send(Ok(part));
                }
            }
            Err(e) if batch > 1 => {
                tracing::warn!(error = %format!("{e:#}"), submissions = batch, "batch failed; retrying each submission alone");
                let (mut a, mut c) = (0, 0);
                for (job, (na, nc)) in jobs.into_iter().zip(shape) {
                    let r = self
                        .store
                        .ingest(&alerts[a..a + na], &changes[c..c + nc], self.clock.now(), &self.policy)
                        .await;
                    (a, c) = (a + na, c + nc);
                    let _ = job.reply.send(r.map_err(|e| self.failed(e)));
                }
            }
            Err(e) => {
                let msg = self.failed(e);
                for job in jobs {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }

    fn failed(&self, e: anyhow::Error) -> String {
        tracing::error!(error = %format!("{e:#}"), "could not store submission");
        "the store could not commit this request; nothing was stored, retry later".to_string()
    }
}
