//! Grafana unified alerting webhook (contact point type "webhook", payload `version: "1"`):
//! the Alertmanager shape plus `orgId`, `values`, `dashboardURL`, `panelURL`, `silenceURL`.
//! The links become the alert's `dashboard`/`panel`/`silence` links and `values` an annotation.

use super::{IntakeError, Parsed, alertmanager};
use crate::alert::Source;

pub fn parse(body: &[u8]) -> Result<Parsed, IntakeError> {
    alertmanager::parse_shaped(body, Source::Grafana, "1")
}
