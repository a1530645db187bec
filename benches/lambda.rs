//! The built binary as Lambda runs it, against a Runtime API stand-in on loopback:
//! - cold start: time from exec to the first answered invocation, median of 20 starts,
//!   for `GET /` and for a first chat turn (which also opens the Redis and OpenAI
//!   connections);
//! - memory: resident set after warm-up and after 10,000 turns (VmRSS, VmHWM).
//!
//! `cargo bench --bench lambda` (or `make bench`); cargo builds the binary with the bench
//! profile (= release). Needs redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/instant_openai.rs"]
mod instant_openai;
#[path = "../tests/support/redis.rs"]
mod redis;
#[path = "../tests/support/runtime_api.rs"]
mod runtime_api;

use std::process::Stdio;
use std::time::{Duration, Instant};

use runtime_api::{Outcome, RuntimeApi};
use serde_json::Value;
use tokio::process::{Child, Command};

fn event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn chat_event(chat: &str) -> Value {
    let mut event = event("post-chat");
    let path = format!("/{chat}/chat");
    event["requestContext"]["path"] = Value::String(format!("/prod{path}"));
    event["path"] = Value::String(path);
    event
}

fn start(runtime: &RuntimeApi, redis_url: &str, openai_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .env("AWS_LAMBDA_FUNCTION_NAME", "chat-proxy")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("GPT_API_KEY", "sk-bench")
        .env("OPENAI_BASE_URL", openai_url)
        .env("REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn status(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Streamed(streamed) => u64::from(streamed.status()),
        Outcome::Response(response) => panic!("a buffered answer to an HTTP event: {response}"),
        Outcome::Error(error) => panic!("invocation error: {error}"),
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (VmRSS, VmHWM) in KiB.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let redis = redis::RedisServer::start();
    let openai_url = instant_openai::start(([127, 0, 0, 1], 0).into()).await;
    let redis_url = redis.url();

    const STARTS: usize = 20;
    let (mut to_hello, mut to_turn, mut turn_alone) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..STARTS {
        let runtime = RuntimeApi::start().await;
        let started = Instant::now();
        let mut child = start(&runtime, &redis_url, &openai_url);
        assert_eq!(status(runtime.invoke(&event("get-root")).await), 200);
        to_hello.push(started.elapsed());
        let _ = child.kill().await;

        let runtime = RuntimeApi::start().await;
        let started = Instant::now();
        let mut child = start(&runtime, &redis_url, &openai_url);
        assert_eq!(
            status(runtime.invoke(&chat_event(&format!("cold-{i}"))).await),
            200
        );
        to_turn.push(started.elapsed());
        let warm = Instant::now();
        assert_eq!(
            status(runtime.invoke(&chat_event(&format!("cold-{i}"))).await),
            200
        );
        turn_alone.push(warm.elapsed());
        let _ = child.kill().await;
    }
    println!("cold start, median of {STARTS} starts (exec -> answered invocation):");
    println!(
        "  GET /                      {:>8.2} ms",
        ms(median(&mut to_hello))
    );
    println!(
        "  first chat turn            {:>8.2} ms",
        ms(median(&mut to_turn))
    );
    println!(
        "  second (warm) chat turn    {:>8.2} ms",
        ms(median(&mut turn_alone))
    );

    // Memory over 10,000 turns on 50 chats, each kept at the 100-message cap.
    let runtime = RuntimeApi::start().await;
    let mut child = start(&runtime, &redis_url, &openai_url);
    let pid = child.id().unwrap();
    for i in 0..1000 {
        let answered = status(
            runtime
                .invoke(&chat_event(&format!("rss-{}", i % 50)))
                .await,
        );
        assert_eq!(answered, 200, "warm-up turn {i}");
    }
    let (warm_rss, warm_peak) = memory_of(pid);
    let started = Instant::now();
    for i in 0..10_000 {
        let answered = status(
            runtime
                .invoke(&chat_event(&format!("rss-{}", i % 50)))
                .await,
        );
        // Figures measured on errors would say nothing: every turn must succeed.
        assert_eq!(answered, 200, "turn {i}");
    }
    let elapsed = started.elapsed();
    let (rss, peak) = memory_of(pid);
    let _ = child.kill().await;
    println!("memory (KiB)                  VmRSS     VmHWM");
    println!("  after 1,000 warm-up turns  {warm_rss:>8}  {warm_peak:>8}");
    println!("  after 10,000 more turns    {rss:>8}  {peak:>8}");
    println!(
        "  10,000 turns through the Runtime API in {:.2} s ({:.0} µs per invocation)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / 10_000.0
    );
}
