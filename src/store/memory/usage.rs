//! Usage and limits in memory.

use std::collections::HashMap;
use std::time::Instant;

use super::idempotency::keep;
use super::MemoryStore;
use crate::chat::Tenant;
use crate::clock::UtcDay;
use crate::store::{CallerUsage, RequestCount, Spent, StoreError, Tokens, Usage, RATE_WINDOW};

#[async_trait::async_trait]
impl Usage for MemoryStore {
    async fn add_usage(&self, tenant: &Tenant, spent: Spent<'_>) -> Result<(), StoreError> {
        let mut state = self.state();
        if !state.counted.insert((tenant.clone(), spent.id.to_owned())) {
            return Ok(());
        }
        let tokens = Tokens {
            prompt_tokens: spent.prompt_tokens,
            completion_tokens: spent.completion_tokens,
            cached_tokens: spent.cached_tokens,
            total_tokens: spent.prompt_tokens + spent.completion_tokens,
        };
        for period in [
            format!("day:{}", spent.day.date),
            format!("month:{}", spent.day.month),
        ] {
            let usage = state.usage.entry((tenant.clone(), period)).or_default();
            usage.total.add(tokens);
            usage
                .models
                .entry(spent.model.to_owned())
                .or_default()
                .add(tokens);
        }
        if let Some(ip) = spent.ip {
            let key = (tenant.clone(), ip.to_owned(), spent.day.date.clone());
            *state.ip_tokens.entry(key).or_default() += tokens.total_tokens;
        }
        if let Some(kept) = spent.answer {
            keep(&mut state, tenant, kept, None);
        }
        if let Some(items) = spent.items {
            for id in items.ids {
                let key = (tenant.clone(), id.clone());
                state.items.insert(key, items.response.to_owned());
            }
        }
        Ok(())
    }

    async fn item_responses(
        &self,
        tenant: &Tenant,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let state = self.state();
        Ok(ids
            .iter()
            .map(|id| state.items.get(&(tenant.clone(), id.clone())).cloned())
            .collect())
    }

    async fn caller_usage(&self, tenant: &Tenant, day: &UtcDay) -> Result<CallerUsage, StoreError> {
        let state = self.state();
        let period = |name: String| {
            state
                .usage
                .get(&(tenant.clone(), name))
                .cloned()
                .unwrap_or_default()
        };
        Ok(CallerUsage {
            day: period(format!("day:{}", day.date)),
            month: period(format!("month:{}", day.month)),
        })
    }

    async fn tokens_spent(
        &self,
        tenant: &Tenant,
        ip: Option<&str>,
        day: &UtcDay,
    ) -> Result<u64, StoreError> {
        let state = self.state();
        Ok(match ip {
            Some(ip) => state
                .ip_tokens
                .get(&(tenant.clone(), ip.to_owned(), day.date.clone()))
                .copied()
                .unwrap_or(0),
            None => state
                .usage
                .get(&(tenant.clone(), format!("day:{}", day.date)))
                .map_or(0, |usage| usage.total.total_tokens),
        })
    }

    async fn count_request(
        &self,
        who: &str,
        request: &str,
        limit: u64,
    ) -> Result<RequestCount, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state.requests.retain(|_, (_, ends)| *ends > now);
        let (counted, ends) = state
            .requests
            .entry(who.to_owned())
            .or_insert_with(|| (HashMap::new(), now + RATE_WINDOW));
        let count = match counted.get(request) {
            Some(count) => *count,
            None => {
                let count = counted.len() as u64 + 1;
                if count <= limit {
                    counted.insert(request.to_owned(), count);
                }
                count
            }
        };
        Ok(RequestCount {
            count,
            // Whole seconds, rounded up, as the Redis store counts them.
            resets_in: u64::try_from(
                ends.saturating_duration_since(now)
                    .as_millis()
                    .div_ceil(1000),
            )
            .unwrap_or(u64::MAX)
            .max(1),
        })
    }
}
