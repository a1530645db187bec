//! What the values of the keys hold, written and read (turns as JSON, sealed or not, are
//! `sealed.rs`'s): the two states of an `Idempotency-Key` (`pending` and `answered`, a line
//! each), and the usage counters' hash
//! fields (`prompt_tokens`, ..., and `model:<name>:prompt_tokens`, ... per model).

use std::collections::HashMap;

use crate::store::{PeriodUsage, StoreError};

/// An answered key's value: `answered`, the request's fingerprint and the answer, a line
/// each (the answer, JSON, may hold anything; with `SEAL_KEYS` both are sealed).
pub(super) fn answered(fingerprint: &str, answer: &str) -> String {
    format!("answered\n{fingerprint}\n{answer}")
}

/// A held key's value: `pending`, the request's fingerprint (with `SEAL_KEYS`, its MAC) and
/// the claimant's token, a line each: the same claimant makes the same value, which is how
/// its claim sent again, and its release, are told from another request's.
pub(super) fn pending(fingerprint: &str, token: &str) -> String {
    format!("pending\n{fingerprint}\n{token}")
}

/// What an `Idempotency-Key` holds, as stored.
pub(super) enum Held {
    Pending { fingerprint: String },
    Answered { fingerprint: String, answer: String },
}

/// What a key holds, `None` when free.
pub(super) fn parse_held(found: &str) -> Result<Option<Held>, StoreError> {
    if found.is_empty() {
        return Ok(None);
    }
    let mut lines = found.splitn(3, '\n');
    match (lines.next(), lines.next(), lines.next()) {
        // Claims made before claims had tokens have no third line.
        (Some("pending"), Some(fingerprint), _) => Ok(Some(Held::Pending {
            fingerprint: fingerprint.to_owned(),
        })),
        (Some("answered"), Some(fingerprint), Some(answer)) => Ok(Some(Held::Answered {
            fingerprint: fingerprint.to_owned(),
            answer: answer.to_owned(),
        })),
        _ => Err(StoreError::new(
            "an idempotency key holds something the proxy did not write",
        )),
    }
}

/// A period's counters from its hash: `model:<name>:<counter>` per model, and the totals
/// their sums. (Counters written before the totals were left to the reader, bare
/// `prompt_tokens` and the like, are left out: their models' fields count the same tokens.)
pub(super) fn period(fields: HashMap<String, u64>) -> PeriodUsage {
    let mut usage = PeriodUsage::default();
    for (field, value) in fields {
        let Some((model, counter)) = field
            .strip_prefix("model:")
            .and_then(|f| f.rsplit_once(':'))
        else {
            continue;
        };
        let tokens = usage.models.entry(model.to_owned()).or_default();
        match counter {
            "prompt_tokens" => tokens.prompt_tokens = value,
            "completion_tokens" => tokens.completion_tokens = value,
            "cached_tokens" => tokens.cached_tokens = value,
            _ => {}
        }
    }
    for tokens in usage.models.values_mut() {
        tokens.total_tokens = tokens.prompt_tokens + tokens.completion_tokens;
        usage.total.prompt_tokens += tokens.prompt_tokens;
        usage.total.completion_tokens += tokens.completion_tokens;
        usage.total.cached_tokens += tokens.cached_tokens;
        usage.total.total_tokens += tokens.total_tokens;
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Tokens;

    #[test]
    fn a_periods_totals_are_its_models_sums_whatever_older_fields_say() {
        let fields: HashMap<String, u64> = [
            ("model:gpt-4o-mini:prompt_tokens", 100),
            ("model:gpt-4o-mini:completion_tokens", 10),
            ("model:gpt-4o-mini:cached_tokens", 64),
            ("model:o3:prompt_tokens", 7),
            ("model:o3:completion_tokens", 3),
            // As an earlier version wrote them beside the models' fields.
            ("prompt_tokens", 50),
            ("total_tokens", 55),
        ]
        .iter()
        .map(|(field, value)| (field.to_string(), *value))
        .collect();
        let usage = period(fields);
        assert_eq!(
            usage.total,
            Tokens {
                prompt_tokens: 107,
                completion_tokens: 13,
                cached_tokens: 64,
                total_tokens: 120
            }
        );
        assert_eq!(usage.models["o3"].total_tokens, 10);
    }
}
