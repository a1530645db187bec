//! What the values of the keys hold, written and read (turns as JSON, sealed or not, are
//! `sealed.rs`'s): the two states of an
//! `Idempotency-Key` (`pending` and `answered`, a line each), and the usage counters' hash
//! fields (`prompt_tokens`, ..., and `model:<name>:prompt_tokens`, ... per model).

use std::collections::HashMap;

use crate::store::{Claim, Claimant, KeptAnswer, PeriodUsage, StoreError};

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
