//! Questions from chat: what every platform's front end shares — the one [`Asker`], the
//! per-person rate limit, and the memory of deliveries already answered (a platform's retry of
//! an event is never answered twice).

use crate::ask::answer::{Answer, Asker, Question};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Event ids remembered, to drop retried deliveries.
const SEEN: usize = 10_000;

pub struct Asking {
    pub asker: Arc<Asker>,
    pub responders: Arc<crate::approval::Responders>,
    limit: crate::ask::RateLimit,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Asking {
    pub fn new(asker: Arc<Asker>, responders: Arc<crate::approval::Responders>) -> Asking {
        let limit = crate::ask::RateLimit::new(asker.config.per_minute);
        Asking { asker, responders, limit, seen: Default::default() }
    }

    /// True the first time `id` is seen (among the last [`SEEN`]).
    pub fn first(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap();
        if !seen.0.insert(id.to_string()) {
            return false;
        }
        seen.1.push_back(id.to_string());
        if seen.1.len() > SEEN
            && let Some(old) = seen.1.pop_front()
        {
            seen.0.remove(&old);
        }
        true
    }

    /// Whether `text` asks something medic answers (not `unknown`, not `help`): a message in
    /// an incident's thread that does not mention medic is answered only then.
    pub fn understood(&self, text: &str) -> bool {
        let v = crate::ask::Vocabulary { now: self.asker.clock.now(), ..Default::default() };
        !matches!(crate::ask::parse(text, &v).intent, crate::ask::Intent::Unknown | crate::ask::Intent::Help)
    }

    /// The answer to `q`, within the asker's rate limit; a failure is an answer saying so.
    pub async fn ask(&self, q: &Question) -> Answer {
        if !self.limit.allow(&q.who.0, self.asker.clock.now()) {
            return Answer::notice(
                format!("You asked more than {} questions in a minute; wait a little.", self.asker.config.per_minute),
                true,
            );
        }
        match self.asker.ask(q).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a question could not be answered");
                Answer::notice("I could not answer: medic's store did not respond. Try again shortly.".into(), true)
            }
        }
    }
}
