//! Questions from chat: what every platform's front end shares. The answering itself sits
//! above chat (`ask`), behind the small [`Answers`] trait, so chat adapters never import it;
//! here are the question as a platform hands it over, the reply as a platform shows it, the
//! per-person rate limit, and the record of deliveries already answered, in the store (a
//! platform's retry of an event is never answered twice, whichever replica it reaches).

use crate::approval::{Groups, Identity};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;

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
}

impl Asking {
    pub fn new(
        answers: Arc<dyn Answers>,
        responders: Arc<crate::approval::Responders>,
        store: Arc<dyn crate::store::Store>,
        clock: Arc<dyn crate::time::Clock>,
    ) -> Asking {
        Asking { answers, responders, store, clock }
    }

    /// True the first time a delivery `id` of `platform` is seen, by any replica.
    pub async fn first(&self, platform: &str, id: &str) -> anyhow::Result<bool> {
        self.store.first_delivery(platform, id, self.clock.now()).await
    }

    /// Whether to answer delivery `id` of `platform`: its first arrival, on any replica. A
    /// store that cannot say answers no (logged): a question unanswered beats one answered twice.
    pub async fn once(&self, platform: &str, id: &str) -> bool {
        self.first(platform, id).await.unwrap_or_else(|e| {
            tracing::warn!(platform, error = %format!("{e:#}"), "a question could not be recorded; not answered");
            false
        })
    }

    pub fn understood(&self, text: &str) -> bool {
        self.answers.understood(text)
    }

    /// The reply to `q`, within the per-person rate limit (counted in the store, so across
    /// replicas); a failure is a reply saying so.
    pub async fn ask(&self, q: &Question) -> Reply {
        let per_minute = self.answers.per_minute();
        let answered = async {
            if !self.store.within_rate("ask", &q.who.0, per_minute, self.clock.now()).await? {
                let text = format!("You asked more than {per_minute} questions in a minute; wait a little.");
                return Ok(Reply::notice(&text, true));
            }
            self.answers.answer(q).await
        };
        match answered.await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a question could not be answered");
                Reply::notice("I could not answer: medic's store did not respond. Try again shortly.", true)
            }
        }
    }
}
