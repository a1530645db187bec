//! Redis cost of one turn for chats of 2 and 100 stored messages at the default
//! MAX_HISTORY_MESSAGES (100), and of 2, 100 and 1000 with it raised to 2000: round trips
//! counted on the wire (a relay holds each direction 20 ms and counts the bursts of
//! requests Redis sees: a request that waited for an answer comes 40 ms after the last),
//! commands the server ran (INFO commandstats, scripts' inner
//! commands included), and the turn's median time on loopback with the relay in the path
//! but holding nothing.
//!
//! Then the cost of counting: how long the context budget takes to decide what a turn
//! sends, on histories of 100 and 1000 stored messages (no I/O: it runs on the history the
//! turn's read brought back).
//!
//! `cargo bench --bench redis_cost` (or `make bench`). Needs redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/instant_openai.rs"]
mod instant_openai;
#[path = "../tests/support/redis.rs"]
mod redis;
#[path = "../tests/support/relay.rs"]
mod relay;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proxy::budget;
use chat_proxy::chat::ChatId;
use chat_proxy::chat::Tenant;
use chat_proxy::chat::{Asked, Turn, UserContent};
use chat_proxy::config::RedisTarget;
use chat_proxy::store::{RedisStore, TurnContext, TurnExtras, Turns};
use chat_proxy::upstream::wire::Usage;
use chat_proxy::{handle, App, Config};
use lambda_http::Body;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<22} {:>8} {:>11} {:>12} {:>9}  commands per turn",
        "MAX_HISTORY_MESSAGES", "stored", "sent (msgs)", "round trips", "p50 ms"
    );
    for (max_history, stored) in [
        ("100", 2),
        ("100", 100),
        ("2000", 2),
        ("2000", 100),
        ("2000", 1000),
    ] {
        runtime.block_on(measure(max_history, stored));
    }
    println!();
    println!(
        "cost of counting: the budget's decision for one turn, median of {COUNTING_RUNS} (µs)"
    );
    println!(
        "{:>8}  {:>22}  {:>22}  {:>22}",
        "stored", "counted, same window", "counted, window moved", "uncounted (estimated)"
    );
    for stored in [100, 1000] {
        counting(stored);
    }
}

const COUNTING_RUNS: usize = 2000;

/// Times `budget::plan` on a history of `stored` messages built the way the turn engine
/// builds it: each turn planned, then stored with the tokens upstream reported.
/// - counted, same window: the newest turn sent the same prompts and window, so the weight
///   is upstream's own count (the usual turn);
/// - counted, window moved: a request that differs from the newest turn's (its prompt was
///   changed), so every turn's stored size is added up;
/// - uncounted: turns stored before turns were counted, so every turn's text is estimated.
fn counting(stored: usize) {
    let asked = [Asked::User(UserContent::Text(
        "one more question about the chat".into(),
    ))];
    let request = budget::Request {
        global_prompt: "You are a helpful assistant.",
        chat_prompt: Some("Answer briefly."),
        asked: &asked,
        besides: 0,
        fixed: 0,
        from: 0,
        compacted: 0,
    };
    let budget = budget::Limits::new(u32::MAX / 2, None);
    let mut context = TurnContext::default();
    for i in 0..stored / 2 {
        let id = Turn::new_id();
        let window = budget::plan(&context, &request, budget, &id).unwrap();
        let usage = Usage {
            prompt_tokens: u64::from(window.tokens),
            completion_tokens: 30,
            total_tokens: u64::from(window.tokens) + 30,
            ..Usage::default()
        };
        let tokens = budget::turn_tokens(&context, &request, &window, &usage);
        let mut turn = Turn::question(
            Some(id),
            format!("question {i}: {}", "x".repeat(40)),
            None,
            format!("answer {i}: {}", "y".repeat(80)),
        );
        turn.tokens = Some(tokens);
        context.history.push(turn);
    }
    let changed = budget::Request {
        chat_prompt: Some("Answer at length."),
        ..request
    };
    let mut uncounted = context.clone();
    for turn in &mut uncounted.history {
        turn.tokens = None;
    }
    let time = |context: &TurnContext, request: &budget::Request<'_>| {
        let mut samples: Vec<Duration> = (0..COUNTING_RUNS)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(
                    budget::plan(std::hint::black_box(context), request, budget, "next").unwrap(),
                );
                started.elapsed()
            })
            .collect();
        samples.sort();
        samples[samples.len() / 2].as_secs_f64() * 1e6
    };
    println!(
        "{:>8}  {:>22.2}  {:>22.2}  {:>22.2}",
        stored,
        time(&context, &request),
        time(&context, &changed),
        time(&uncounted, &request)
    );
}

async fn measure(max_history: &str, stored: usize) {
    let redis = redis::RedisServer::start();
    let relay = relay::Relay::start(([127, 0, 0, 1], redis.port()).into()).await;
    let openai_url = instant_openai::start(([127, 0, 0, 1], 0).into()).await;
    let redis_url = format!("redis://127.0.0.1:{}", relay.port());
    let config = Config::from_lookup(|name| match name {
        "GPT_API_KEY" => Some("sk-bench".to_owned()),
        "OPENAI_BASE_URL" => Some(openai_url.clone()),
        "REDIS_URL" => Some(redis_url.clone()),
        "MAX_HISTORY_MESSAGES" => Some(max_history.to_owned()),
        _ => None,
    })
    .unwrap();
    let target = RedisTarget::Url(redis_url.clone().into());
    let store = Arc::new(
        RedisStore::connect(&target, config.store.clone(), config.redis_timeout, None).unwrap(),
    );
    assert!(store.wait_connected(Duration::from_secs(5)).await);
    let app = App::with_store(&config, store.clone()).unwrap();

    // Fill the chat directly: `stored` messages are stored / 2 turns (the cap trims them).
    let chat = ChatId::parse("measured").unwrap();
    fill(&store, &chat, stored / 2).await;
    let kept = store.turns(&Tenant::Open, &chat).await.unwrap().len() * 2;

    let request = || {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/measured/chat")
            .body(Body::from(r#"{"content": "one more"}"#))
            .unwrap()
    };
    // One measured turn for the counts, with each direction of the link held 20 ms...
    const HOP: Duration = Duration::from_millis(20);
    let commands_before = redis.command_counts();
    relay.set_delay(HOP);
    let started = tokio::time::Instant::now();
    assert_eq!(handle(&app, request()).await.status(), 200);
    let trips = relay.bursts_since(started);
    relay.set_delay(Duration::ZERO);
    let mut commands: BTreeMap<String, u64> = redis.command_counts();
    for (name, count) in &commands_before {
        if let Some(after) = commands.get_mut(name) {
            *after -= count;
        }
    }
    commands.retain(|name, count| *count > 0 && name != "info");

    // ...then the time, over turns that keep the chat at the same length.
    let mut samples = Vec::new();
    for _ in 0..200 {
        store.clear(&Tenant::Open, &chat).await.unwrap();
        fill(&store, &chat, kept / 2).await;
        let started = Instant::now();
        assert_eq!(handle(&app, request()).await.status(), 200);
        samples.push(started.elapsed());
        if kept >= 1000 && samples.len() >= 30 {
            break;
        }
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let summary: Vec<String> = commands.iter().map(|(n, c)| format!("{n}={c}")).collect();
    println!(
        "{:<22} {:>8} {:>11} {:>12} {:>9.3}  {}",
        max_history,
        stored,
        kept,
        trips,
        p50.as_secs_f64() * 1000.0,
        summary.join(" ")
    );
}

/// Appends `turns` turns of about 150 bytes each.
async fn fill(store: &RedisStore, chat: &ChatId, turns: usize) {
    for i in 0..turns {
        let turn = Turn::question(
            Some(Turn::new_id()),
            format!("question {i}: {}", "x".repeat(40)),
            None,
            format!("answer {i}: {}", "y".repeat(80)),
        );
        store
            .append_turn(&Tenant::Open, chat, &turn, TurnExtras::default())
            .await
            .unwrap();
    }
}
