//! Usage and limits in Redis: a caller's counters (`add_usage.lua`, with the chat's place in
//! its list and where a stored response's items are, in the caller's slot), and its requests
//! in the rate limit's window (`count_request.lua`).

use std::collections::HashMap;

use fred::interfaces::{HashesInterface, KeysInterface};

use super::values::period;
use super::{RedisStore, MARKER_SECONDS};
use crate::chat::Tenant;
use crate::clock::UtcDay;
use crate::store::{
    CallerUsage, RequestCount, Spent, StoreError, Usage, ANSWER_SECONDS, RATE_WINDOW,
};

impl RedisStore {
    /// `add_usage`'s keys and arguments (`scripts/add_usage.lua`).
    pub(super) fn add_usage_call(
        &self,
        tenant: &Tenant,
        spent: Spent<'_>,
    ) -> (Vec<String>, Vec<String>) {
        let counters = self.keys.usage(tenant, spent.day, spent.ip);
        let mut keys = vec![
            self.keys.spent_marker(tenant, spent.id),
            counters.day,
            counters.month,
        ];
        keys.extend(counters.ip);
        let answer = match spent.answer {
            Some(kept) => {
                let key = self.keys.idempotency(tenant, kept.key);
                // A value that cannot be sealed is not kept: the request is answered anyway.
                let sealed = self.seal_answer(&key, kept).unwrap_or_default();
                if !sealed.is_empty() {
                    keys.push(key);
                }
                sealed
            }
            None => String::new(),
        };
        let listed = spent.listed.filter(|(chat, _)| !chat.is_chain());
        if listed.is_some() {
            keys.push(self.keys.chat_index(tenant));
            keys.push(self.keys.chats_made(tenant));
        }
        let items = spent.items.filter(|items| !items.ids.is_empty());
        if let Some(items) = items {
            keys.extend(items.ids.iter().map(|id| self.keys.item(tenant, id)));
        }
        // A day's counters outlive the day by a day, a month's by a month.
        let day_ttl = spent.day.seconds_left + 86_400;
        let month_ttl = 62 * 86_400;
        let args = vec![
            spent.model.to_owned(),
            spent.prompt_tokens.to_string(),
            spent.completion_tokens.to_string(),
            spent.cached_tokens.to_string(),
            day_ttl.to_string(),
            month_ttl.to_string(),
            if spent.ip.is_some() { "1" } else { "0" }.to_owned(),
            answer,
            ANSWER_SECONDS.to_string(),
            MARKER_SECONDS.to_string(),
        ];
        let mut args = args;
        match listed {
            Some((chat, now)) => args.extend(self.index_args(chat, Some(now))),
            None => args.extend([String::new(), String::new(), String::new()]),
        }
        args.push(
            items
                .map(|items| items.response.to_owned())
                .unwrap_or_default(),
        );
        // A temporary chat's items are kept no longer than the chat.
        args.push(
            items
                .and_then(|items| items.temporary)
                .map_or_else(|| self.ttl_arg(), |ttl| ttl.as_secs().max(1).to_string()),
        );
        (keys, args)
    }
}

#[async_trait::async_trait]
impl Usage for RedisStore {
    async fn add_usage(&self, tenant: &Tenant, spent: Spent<'_>) -> Result<(), StoreError> {
        let (keys, args) = self.add_usage_call(tenant, spent);
        self.eval::<i64>(&self.scripts.add_usage, keys, args)
            .await
            .map(drop)
    }

    async fn caller_usage(&self, tenant: &Tenant, day: &UtcDay) -> Result<CallerUsage, StoreError> {
        let counters = self.keys.usage(tenant, day, None);
        let (today, month) = tokio::join!(
            self.client()
                .hgetall::<HashMap<String, u64>, _>(counters.day),
            self.client()
                .hgetall::<HashMap<String, u64>, _>(counters.month),
        );
        Ok(CallerUsage {
            day: period(today.map_err(|e| self.error(e))?),
            month: period(month.map_err(|e| self.error(e))?),
        })
    }

    async fn item_responses(
        &self,
        tenant: &Tenant,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One slot (the caller's), so one MGET, on a Cluster too.
        let keys: Vec<String> = ids.iter().map(|id| self.keys.item(tenant, id)).collect();
        let found: Vec<Option<String>> =
            self.client().mget(keys).await.map_err(|e| self.error(e))?;
        Ok(found)
    }

    async fn tokens_spent(
        &self,
        tenant: &Tenant,
        ip: Option<&str>,
        day: &UtcDay,
    ) -> Result<u64, StoreError> {
        let counters = self.keys.usage(tenant, day, ip);
        match counters.ip {
            Some(ip) => {
                let spent: Option<u64> = self.client().get(ip).await.map_err(|e| self.error(e))?;
                Ok(spent.unwrap_or(0))
            }
            None => {
                let fields: HashMap<String, u64> = self
                    .client()
                    .hgetall(counters.day)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(period(fields).total.total_tokens)
            }
        }
    }

    async fn count_request(
        &self,
        who: &str,
        request: &str,
        limit: u64,
    ) -> Result<RequestCount, StoreError> {
        let key = self.keys.requests(who);
        let args = vec![
            RATE_WINDOW.as_millis().to_string(),
            request.to_owned(),
            limit.to_string(),
        ];
        let (count, left_ms): (u64, u64) = self
            .eval(&self.scripts.count_request, vec![key], args)
            .await?;
        Ok(RequestCount {
            count,
            // Whole seconds, rounded up: a window in its last half second still says 1.
            resets_in: left_ms.div_ceil(1000).max(1),
        })
    }
}
