//! The integration suite: one test binary (one link step), a real redis-server per test,
//! and a fake OpenAI at the HTTP level.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod background;
mod budget;
mod callers;
mod chats;
mod compaction;
mod conversations;
mod e2e;
mod echo;
mod events;
mod idempotency;
mod input_errors;
mod layers;
mod limits;
mod live;
mod openai_api;
mod openapi;
mod prompt_cache;
mod properties;
mod redis_deployments;
mod redis_faults;
mod response_streams;
mod responses;
mod routes;
mod sealed;
mod search;
mod secrets;
mod shares;
mod store_contract;
mod stored_compaction;
mod stored_findings;
mod stored_tools;
mod streams;
mod temporary;
mod tokens;
mod turns;
mod upstream_faults;
mod usage;
mod write_contract;
mod write_model;
