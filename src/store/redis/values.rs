//! What the values of the keys hold, written and read: turns as JSON, the two states of an
//! `Idempotency-Key` (`pending` and `answered`, a line each), and the usage counters' hash
//! fields (`prompt_tokens`, ..., and `model:<name>:prompt_tokens`, ... per model).

use std::collections::HashMap;

use crate::chat::Turn;
use crate::store::{Claim, Claimant, KeptAnswer, PeriodUsage, StoreError, Tokens};

pub(super) fn decode_turns(raw: Vec<String>) -> Result<Vec<Turn>, StoreError> {
    raw.iter()
        .map(|json| {
            serde_json::from_str(json)
                .map_err(|e| StoreError::new(format!("a stored turn is not valid JSON: {e}")))
        })
        .collect()
}

/// An answered key's value: `answered`, the fingerprint and the answer, a line each (the
/// fingerprint is hex; the answer, JSON, may hold anything).
pub(super) fn answered(kept: KeptAnswer<'_>) -> String {
    format!("answered\n{}\n{}", kept.fingerprint, kept.answer)
}

/// A held key's value: `pending`, the fingerprint and the claimant's token, a line each.
pub(super) fn pending(claimant: Claimant<'_>) -> String {
    format!("pending\n{}\n{}", claimant.fingerprint, claimant.token)
}

pub(super) fn parse_claim(found: &str) -> Result<Claim, StoreError> {
    if found.is_empty() {
        return Ok(Claim::Claimed);
    }
    let mut lines = found.splitn(3, '\n');
    match (lines.next(), lines.next(), lines.next()) {
        // Claims made before claims had tokens have no third line.
        (Some("pending"), Some(fingerprint), _) => Ok(Claim::InProgress {
            fingerprint: fingerprint.to_owned(),
        }),
        (Some("answered"), Some(fingerprint), Some(answer)) => Ok(Claim::Answered {
            fingerprint: fingerprint.to_owned(),
            answer: answer.to_owned(),
        }),
        _ => Err(StoreError::new(
            "an idempotency key holds something the proxy did not write",
        )),
    }
}

/// A period's counters from its hash: the totals, and `model:<name>:<counter>` per model.
pub(super) fn period(fields: HashMap<String, u64>) -> PeriodUsage {
    let mut usage = PeriodUsage::default();
    for (field, value) in fields {
        let (tokens, counter) = match field
            .strip_prefix("model:")
            .and_then(|f| f.rsplit_once(':'))
        {
            Some((model, counter)) => (usage.models.entry(model.to_owned()).or_default(), counter),
            None => (&mut usage.total, field.as_str()),
        };
        add_counter(tokens, counter, value);
    }
    usage
}

fn add_counter(tokens: &mut Tokens, counter: &str, value: u64) {
    match counter {
        "prompt_tokens" => tokens.prompt_tokens = value,
        "completion_tokens" => tokens.completion_tokens = value,
        "cached_tokens" => tokens.cached_tokens = value,
        "total_tokens" => tokens.total_tokens = value,
        _ => {}
    }
}
