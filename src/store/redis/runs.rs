//! Background runs in Redis: a hash per run (`N:chat:{ID}:run:<turn>`: its status, deadline,
//! runner, a cancellation asked for, how many batches it recorded, and its ticket and final
//! response sealed), and its events beside it (`...:run:<turn>:events`, a list of sealed
//! batches, each sealed to its place). Both in the slot of the chat the run's answer lands
//! in, so that every change is one script on one node.

use std::collections::HashMap;

use fred::interfaces::ListInterface;

use super::RedisStore;
use crate::chat::{ChatId, Tenant};
use crate::clock::now_ms;
use crate::store::{
    Ending, NewLive, NewRun, RunState, RunStatus, Runs, Start, StoreError, ENDED_LIVE_SECONDS,
    LIVE_SECONDS, RUN_SECONDS,
};

const TICKET: &str = "ticket";
const RESPONSE: &str = "response";

impl RedisStore {
    /// A run's fields (HGETALL, as a flat list) as the store's contract reads them.
    fn run_of(&self, key: &str, mut fields: Vec<String>) -> Result<RunState, StoreError> {
        let mut named = HashMap::new();
        while let (Some(value), Some(name)) = (fields.pop(), fields.pop()) {
            named.insert(name, value);
        }
        let bad = || StoreError::new(format!("a run's record is not one this proxy wrote: {key}"));
        let status = named
            .get("status")
            .and_then(|status| RunStatus::parse(status))
            .ok_or_else(bad)?;
        let number = |field: &str| named.get(field).and_then(|n| n.parse::<u64>().ok());
        let deadline_ms = number("deadline").ok_or_else(bad)?;
        let batches = number("batches").unwrap_or(0);
        Ok(RunState {
            status,
            deadline_ms,
            cancel_asked: named.get("cancel").is_some_and(|flag| flag == "1"),
            ticket: self
                .sealing
                .open_text(key, TICKET, named.remove(TICKET).ok_or_else(bad)?)?,
            response: self
                .sealing
                .open_optional(key, RESPONSE, named.remove(RESPONSE))?,
            batches,
        })
    }

    fn run_key(&self, tenant: &Tenant, chat: &ChatId, id: &str) -> String {
        self.keys.chat(tenant, chat).run(id)
    }
}

#[async_trait::async_trait]
impl Runs for RedisStore {
    async fn queue_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        run: NewRun<'_>,
    ) -> Result<(), StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let key = keys.run(run.id);
        let ticket = self.sealing.seal_text(&key, TICKET, run.ticket)?;
        let args = vec![
            ticket,
            run.start_by_ms.to_string(),
            RUN_SECONDS.to_string(),
            run.id.to_owned(),
        ];
        self.eval::<i64>(&self.scripts.queue_run, vec![key, keys.runs()], args)
            .await
            .map(drop)
    }

    async fn start_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        runner: &str,
        deadline_ms: u64,
    ) -> Result<Start, StoreError> {
        let key = self.run_key(tenant, chat, id);
        let args = vec![
            runner.to_owned(),
            deadline_ms.to_string(),
            now_ms().to_string(),
        ];
        let found: fred::types::Value = self
            .eval(&self.scripts.start_run, vec![key.clone()], args)
            .await?;
        let mut fields: Vec<String> = match found {
            fred::types::Value::Array(_) => found
                .convert()
                .map_err(|e| StoreError::new(e.to_string()))?,
            _ => return Ok(Start::Missing),
        };
        if fields.is_empty() {
            return Ok(Start::Missing);
        }
        let answer = fields.remove(0);
        let state = self.run_of(&key, fields)?;
        Ok(match answer.as_str() {
            "taken" => Start::Taken(state),
            _ => Start::Not(state),
        })
    }

    async fn run_state(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
    ) -> Result<Option<RunState>, StoreError> {
        use fred::interfaces::HashesInterface;
        let key = self.run_key(tenant, chat, id);
        let fields: HashMap<String, String> = self
            .client()
            .hgetall(&key)
            .await
            .map_err(|e| self.error(e))?;
        if fields.is_empty() {
            return Ok(None);
        }
        let flat = fields.into_iter().flat_map(|(k, v)| [k, v]).collect();
        self.run_of(&key, flat).map(Some)
    }

    async fn cancel_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        response: &str,
    ) -> Result<Option<RunState>, StoreError> {
        let key = self.run_key(tenant, chat, id);
        let sealed = self.sealing.seal_text(&key, RESPONSE, response)?;
        let args = vec![sealed, now_ms().to_string()];
        let found: fred::types::Value = self
            .eval(
                &self.scripts.cancel_run,
                vec![key.clone(), self.keys.chat(tenant, chat).meta],
                args,
            )
            .await?;
        let fields: Vec<String> = match found {
            fred::types::Value::Array(_) => found
                .convert()
                .map_err(|e| StoreError::new(e.to_string()))?,
            _ => return Ok(None),
        };
        self.run_of(&key, fields).map(Some)
    }

    async fn record_events(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        batch: u64,
        events: &str,
    ) -> Result<bool, StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let events_key = keys.run_events(id);
        let sealed = match events.is_empty() {
            true => String::new(),
            false => self
                .sealing
                .seal_text(&events_key, &batch.to_string(), events)?,
        };
        let cancel: i64 = self
            .eval(
                &self.scripts.record_events,
                vec![keys.run(id), events_key],
                vec![batch.to_string(), sealed],
            )
            .await?;
        Ok(cancel == 1)
    }

    async fn run_events(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        from: u64,
    ) -> Result<Vec<String>, StoreError> {
        let key = self.keys.chat(tenant, chat).run_events(id);
        let start = i64::try_from(from).unwrap_or(i64::MAX);
        let batches: Vec<String> = self
            .client()
            .lrange(&key, start, -1)
            .await
            .map_err(|e| self.error(e))?;
        batches
            .into_iter()
            .zip(from..)
            .map(|(batch, place)| self.sealing.open_text(&key, &place.to_string(), batch))
            .collect()
    }

    async fn end_run(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        id: &str,
        by: Ending<'_>,
        status: RunStatus,
        response: &str,
    ) -> Result<bool, StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let key = keys.run(id);
        let sealed = self.sealing.seal_text(&key, RESPONSE, response)?;
        let runner = match by {
            Ending::Queued => String::new(),
            Ending::Runner(runner) => runner.to_owned(),
        };
        let args = vec![
            status.as_str().to_owned(),
            sealed,
            runner,
            id.to_owned(),
            ENDED_LIVE_SECONDS.to_string(),
        ];
        let runs = keys.runs();
        let keys = vec![key, keys.live(), keys.run_events(id), keys.meta, runs];
        let ended: i64 = self.eval(&self.scripts.end_run, keys, args).await?;
        Ok(ended == 1)
    }

    async fn begin_live(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
        live: NewLive<'_>,
    ) -> Result<(), StoreError> {
        let keys = self.keys.chat(tenant, chat);
        let key = keys.run(live.id);
        let asked = self.sealing.seal_text(&key, TICKET, live.asked)?;
        let left = live.deadline_ms.saturating_sub(now_ms());
        let args = vec![
            asked,
            live.deadline_ms.to_string(),
            LIVE_SECONDS.to_string(),
            live.id.to_owned(),
            left.to_string(),
        ];
        self.eval::<i64>(
            &self.scripts.begin_live,
            vec![key, keys.runs(), keys.live()],
            args,
        )
        .await
        .map(drop)
    }

    async fn live_turn(
        &self,
        tenant: &Tenant,
        chat: &ChatId,
    ) -> Result<Option<String>, StoreError> {
        use fred::interfaces::KeysInterface;
        let key = self.keys.chat(tenant, chat).live();
        self.client().get(&key).await.map_err(|e| self.error(e))
    }
}
