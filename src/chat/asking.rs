//! Questions from chat: what every platform's front end shares. The answering itself sits
//! above chat (`ask`), behind the small [`Answers`] trait, so chat adapters never import it;
//! here are the question as a platform hands it over, the reply as a platform shows it, the
//! per-person rate limit, and the record of deliveries already answered, in the store (a
//! platform's retry of an event is never answered twice, whichever replica it reaches).

use crate::approval::{Groups, Identity};
use crate::time::Millis;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Who asks what, where.
#[derive(Debug, Clone)]
pub struct Question {
    pub text: String,
    /// The incident whose thread it was asked in (or `--incident`).
    pub incident: Option<i64>,
    pub who: Identity,
    /// Where: `slack:C123`, `discord:…`, `api`, `cli`.
    pub via: String,
    /// The groups `who` belongs to as the platform knows them (Slack user groups expanded).
    pub groups: Groups,
    /// Told to medic (a mention, a DM, a slash command, a modal, the API, the CLI) rather than
    /// overheard in an incident's thread. An overheard message is answered, never acted on.
    pub addressed: bool,
}

/// An answer as a platform shows it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Data for `templates/<platform>/answer.hbs`: `headline`, `body`, `evidence`,
    /// `unavailable`, `intent`, `incident`.
    pub view: Value,
    /// Shown only to the asker (a refusal).
    pub private: bool,
    /// A chart's title and PNG.
    pub chart: Option<(String, Vec<u8>)>,
}

impl Reply {
    /// A reply that is only a line.
    pub fn notice(text: &str, private: bool) -> Reply {
        let view = json!({"headline": text, "body": "", "evidence": "", "unavailable": "", "intent": "unknown", "incident": null});
        Reply { view, private, chart: None }
    }
}

/// What answers questions (`ask::answer::Asker`).
#[async_trait]
pub trait Answers: Send + Sync {
    async fn answer(&self, q: &Question) -> anyhow::Result<Reply>;
    /// Whether `text`, overheard, asks something medic answers (not `unknown`, not `help`, not
    /// a state change it would refuse): a message in an incident's thread that does not
    /// mention medic is answered only then.
    fn understood(&self, text: &str) -> bool;
    /// Questions one person may ask per minute.
    fn per_minute(&self) -> u32;
}

pub struct Asking {
    pub answers: Arc<dyn Answers>,
    pub responders: Arc<crate::approval::Responders>,
    pub store: Arc<dyn crate::store::Store>,
    pub clock: Arc<dyn crate::time::Clock>,
    limit: RateLimit,
}

impl Asking {
    pub fn new(
        answers: Arc<dyn Answers>,
        responders: Arc<crate::approval::Responders>,
        store: Arc<dyn crate::store::Store>,
        clock: Arc<dyn crate::time::Clock>,
    ) -> Asking {
        let limit = RateLimit::new(answers.per_minute());
        Asking { answers, responders, store, clock, limit }
    }

    /// True the first time a delivery `id` of `platform` is seen, by any replica.
    pub async fn first(&self, platform: &str, id: &str) -> anyhow::Result<bool> {
        self.store.first_delivery(platform, id, self.clock.now()).await
    }

    pub fn understood(&self, text: &str) -> bool {
        self.answers.understood(text)
    }

    /// The reply to `q`, within the per-person rate limit; a failure is a reply saying so.
    pub async fn ask(&self, q: &Question) -> Reply {
        if !self.limit.allow(&q.who.0, self.clock.now()) {
            let text =
                format!("You asked more than {} questions in a minute; wait a little.", self.answers.per_minute());
            return Reply::notice(&text, true);
        }
        match self.answers.answer(q).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a question could not be answered");
                Reply::notice("I could not answer: medic's store did not respond. Try again shortly.", true)
            }
        }
    }
}

/// Per-person rate limit: at most `per_minute` questions in any sliding minute.
pub struct RateLimit {
    per_minute: u32,
    seen: Mutex<HashMap<String, VecDeque<Millis>>>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit { per_minute, seen: Default::default() }
    }

    /// Whether `who` may ask now (and counts the question if so).
    pub fn allow(&self, who: &str, now: Millis) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() > 10_000 {
            seen.retain(|_, q| q.back().is_some_and(|t| now - t < 60_000));
        }
        let q = seen.entry(who.to_string()).or_default();
        while q.front().is_some_and(|t| now - t >= 60_000) {
            q.pop_front();
        }
        if q.len() as u32 >= self.per_minute {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_slides() {
        let r = RateLimit::new(2);
        assert!(r.allow("a", 0) && r.allow("a", 10));
        assert!(!r.allow("a", 20) && r.allow("b", 20));
        assert!(r.allow("a", 60_001));
    }
}
