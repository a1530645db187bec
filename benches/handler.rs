//! The proxy's own cost per request, in process: `handle()` for each route, over the
//! in-memory store and over a real redis-server on loopback, with an upstream that answers
//! at once. Criterion measures each case; a second pass records every iteration and prints
//! the median and p99 per route, and the median number of heap allocations a request made
//! (counted by a global allocator that wraps the system's), which is what BENCHMARKS.md
//! reports.
//!
//! `cargo bench --bench handler` (or `make bench`). Needs redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/instant_openai.rs"]
mod instant_openai;
#[path = "../tests/support/redis.rs"]
mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_proxy::config::RedisTarget;
use chat_proxy::store::{MemoryStore, RedisStore, Store};
use chat_proxy::{handle, App, Config};
use criterion::Criterion;
use lambda_http::{Body, Request};
use tokio::runtime::Runtime;

/// The system allocator, counting allocations: a request's count is the difference
/// across it (the runtime is single-threaded, so nothing else allocates meanwhile but the
/// request's own work, the Redis client's included).
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Setup {
    name: &'static str,
    app: App,
}

fn config(redis_url: Option<&str>, openai_url: &str) -> Config {
    sealed_config(redis_url, openai_url, None)
}

/// With `SEAL_KEYS` (under a key prefix of its own, beside the plain setup's chats).
fn sealed_config(redis_url: Option<&str>, openai_url: &str, seal: Option<&str>) -> Config {
    Config::from_lookup(|name| match name {
        "GPT_API_KEY" => Some("sk-bench".to_owned()),
        "OPENAI_BASE_URL" => Some(openai_url.to_owned()),
        "REDIS_URL" => redis_url.map(str::to_owned),
        "SEAL_KEYS" => seal.map(str::to_owned),
        "REDIS_KEY_PREFIX" => seal.map(|_| "sealed".to_owned()),
        // Compaction on (at a size no bench chat reaches), to weigh a turn that does not
        // compact with it on.
        "COMPACT_AT_TOKENS" => std::env::var("BENCH_COMPACT_AT_TOKENS").ok(),
        _ => None,
    })
    .expect("bench configuration")
}

fn setups(runtime: &Runtime, redis: &redis::RedisServer) -> Vec<Setup> {
    runtime.block_on(async {
        let openai_url = instant_openai::start(([127, 0, 0, 1], 0).into()).await;
        let memory_config = config(None, &openai_url);
        let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(memory_config.store.clone()));
        let redis_config = config(Some(&redis.url()), &openai_url);
        let target = RedisTarget::Url(redis.url().into());
        let store = RedisStore::connect(
            &target,
            redis_config.store.clone(),
            redis_config.redis_timeout,
            None,
        )
        .unwrap();
        assert!(store.wait_connected(Duration::from_secs(5)).await);
        let mut setups = vec![
            Setup {
                name: "memory",
                app: App::with_store(&memory_config, memory).unwrap(),
            },
            Setup {
                name: "redis",
                app: App::with_store(&redis_config, Arc::new(store)).unwrap(),
            },
        ];
        // BENCH_SEALED=1: Redis again, with every chat sealed (SEAL_KEYS), to set beside it.
        if std::env::var_os("BENCH_SEALED").is_some() {
            let key = "bench:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
            let sealed_config = sealed_config(Some(&redis.url()), &openai_url, Some(key));
            let sealed = RedisStore::connect(
                &target,
                sealed_config.store.clone(),
                sealed_config.redis_timeout,
                None,
            )
            .unwrap()
            .sealed(sealed_config.seal_keys.clone());
            assert!(sealed.wait_connected(Duration::from_secs(5)).await);
            setups.push(Setup {
                name: "sealed",
                app: App::with_store(&sealed_config, Arc::new(sealed)).unwrap(),
            });
        }
        for setup in &setups {
            // A chat at the history cap (100 messages), and one for the transcript route.
            for i in 0..50 {
                let reply = handle(&setup.app, post("/full/chat", &format!("message {i}"))).await;
                assert_eq!(reply.status(), 200);
            }
            // A conversation at the cap made of Responses turns, for `respond_100`.
            for i in 0..50 {
                let body =
                    serde_json::json!({"input": format!("message {i}"), "conversation": "rfull"});
                if i == 0 {
                    handle(&setup.app, post("/rfull/chat", "first")).await;
                }
                let reply = handle(&setup.app, post_json("/v1/responses", body, None)).await;
                assert_eq!(reply.status(), 200);
            }
        }
        setups
    })
}

fn get(path: &str) -> Request {
    lambda_http::http::Request::builder()
        .method("GET")
        .uri(path)
        .body(Body::Empty)
        .unwrap()
}

fn post(path: &str, content: &str) -> Request {
    post_json(path, serde_json::json!({ "content": content }), None)
}

fn post_json(path: &str, body: serde_json::Value, chat: Option<&str>) -> Request {
    let mut request = lambda_http::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json");
    if let Some(chat) = chat {
        request = request.header("x-chat-id", chat);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

static FRESH: AtomicU64 = AtomicU64::new(0);

/// Makes a fresh request for one iteration.
type RequestMaker = Box<dyn Fn() -> Request>;

/// The routes measured, each as a request maker.
fn cases() -> Vec<(&'static str, RequestMaker)> {
    vec![
        ("hello", Box::new(|| get("/"))),
        ("get_system", Box::new(|| get("/system"))),
        (
            "set_chat_system",
            Box::new(|| post("/prompted/system", "Be brief.")),
        ),
        ("get_chat_100", Box::new(|| get("/full/chat"))),
        (
            "send_chat_new",
            Box::new(|| {
                post(
                    &format!("/fresh-{}/chat", FRESH.fetch_add(1, Ordering::Relaxed)),
                    "Hello!",
                )
            }),
        ),
        (
            "send_chat_100",
            Box::new(|| post("/full/chat", "And then?")),
        ),
        (
            "completions_100",
            Box::new(|| {
                let body =
                    serde_json::json!({"messages": [{"role": "user", "content": "And then?"}]});
                post_json("/v1/chat/completions", body, Some("full"))
            }),
        ),
        (
            "respond_new",
            Box::new(|| {
                post_json(
                    "/v1/responses",
                    serde_json::json!({"input": "Hello!"}),
                    None,
                )
            }),
        ),
        (
            "respond_100",
            Box::new(|| {
                let body = serde_json::json!({"input": "And then?", "conversation": "rfull"});
                post_json("/v1/responses", body, None)
            }),
        ),
        (
            "regenerate_100",
            Box::new(|| post_json("/full/regenerate", serde_json::json!({}), None)),
        ),
        // A page of the caller's chats: the index holds every chat the cases above made.
        ("list_chats_20", Box::new(|| get("/chats?limit=20"))),
        (
            "moderate",
            Box::new(|| post("/mod", "I want to hug my cat.")),
        ),
    ]
}

/// `GET /chats?q=` over 1,000 chats of 100 messages each (about 10 MB of turns) for each
/// store: a query no chat holds, so each request reads as many chats as one may (500, in 10
/// round trips of 50), and two requests read them all.
fn search(runtime: &Runtime, setups: &[Setup]) {
    const CHATS: usize = 1000;
    const RUNS: usize = 20;
    println!(
        "\n{:<8} {:<28} {:>10} {:>10} {:>10}",
        "store", "search", "p50 ms", "p99 ms", "scanned"
    );
    for setup in setups {
        runtime.block_on(async {
            for i in 0..CHATS {
                let messages: Vec<serde_json::Value> = (0..100)
                    .map(|m| {
                        let role = if m % 2 == 0 { "user" } else { "assistant" };
                        serde_json::json!({"role": role,
                            "content": format!("message {m} of chat {i}: a sentence about the harbour and its boats")})
                    })
                    .collect();
                let document = serde_json::json!({"into": format!("searched-{i}"), "messages": messages});
                let reply = handle(&setup.app, post_json("/chats/import", document, None)).await;
                assert_eq!(reply.status(), 200);
            }
        });
        let mut first = Vec::new();
        let mut both = Vec::new();
        let (mut scanned_first, mut scanned) = (0, 0);
        for _ in 0..RUNS {
            runtime.block_on(async {
                let started = Instant::now();
                let page = body_json(handle(&setup.app, get("/chats?q=albatross")).await).await;
                first.push(started.elapsed());
                let next = page["next"]
                    .as_str()
                    .expect("the bound cut the first request");
                let rest = get(&format!("/chats?q=albatross&after={next}"));
                let rest = body_json(handle(&setup.app, rest).await).await;
                both.push(started.elapsed());
                scanned_first = page["scanned"].as_u64().unwrap();
                scanned = scanned_first + rest["scanned"].as_u64().unwrap();
            });
        }
        for (what, samples) in [
            ("one request", &mut first),
            ("all (two requests)", &mut both),
        ] {
            samples.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{:<8} {:<28} {:>10.1} {:>10.1} {:>10}",
                setup.name,
                what,
                ms(samples[samples.len() / 2]),
                ms(samples[samples.len() * 99 / 100]),
                if what.starts_with("all") {
                    scanned
                } else {
                    scanned_first
                }
            );
        }
    }
}

/// A response's JSON body, read whole.
async fn body_json(
    response: lambda_http::Response<chat_proxy::http::ResponseBody>,
) -> serde_json::Value {
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(piece) = body.next().await {
        bytes.extend_from_slice(&piece);
    }
    serde_json::from_slice(&bytes).unwrap()
}

fn percentiles(runtime: &Runtime, setups: &[Setup]) {
    const ITERATIONS: usize = 3000;
    println!(
        "\n{:<8} {:<16} {:>10} {:>10} {:>12}",
        "store", "route", "p50 µs", "p99 µs", "allocations"
    );
    for setup in setups {
        for (route, make) in cases() {
            let samples: (Vec<Duration>, u64) = runtime.block_on(async {
                for _ in 0..300 {
                    handle(&setup.app, make()).await;
                }
                let mut samples = Vec::with_capacity(ITERATIONS);
                let mut allocations = Vec::with_capacity(ITERATIONS);
                for _ in 0..ITERATIONS {
                    let request = make();
                    let before = ALLOCATIONS.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let response = handle(&setup.app, request).await;
                    samples.push(started.elapsed());
                    allocations.push(ALLOCATIONS.load(Ordering::Relaxed) - before);
                    assert!(
                        response.status().is_success(),
                        "{route}: {}",
                        response.status()
                    );
                }
                allocations.sort_unstable();
                (samples, allocations[allocations.len() / 2])
            });
            let (mut samples, allocations) = samples;
            samples.sort();
            let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
            println!(
                "{:<8} {:<16} {:>10.1} {:>10.1} {:>12}",
                setup.name,
                route,
                at(0.50).as_secs_f64() * 1e6,
                at(0.99).as_secs_f64() * 1e6,
                allocations
            );
        }
    }
}

fn main() {
    // BENCH_LOGS=1 measures with the function's JSON request log on (written to a sink).
    if std::env::var_os("BENCH_LOGS").is_some() {
        chat_proxy::telemetry::init_with_writer(
            chat_proxy::telemetry::LogFormat::Json,
            std::io::sink,
        );
    }
    // One thread, as on Lambda (the function runs a current-thread runtime).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = redis::RedisServer::start();
    let setups = setups(&runtime, &redis);

    // BENCH_SEARCH=1 measures `GET /chats?q=` over 1,000 chats of 100 messages each, and
    // nothing else (BENCHMARKS.md).
    if std::env::var_os("BENCH_SEARCH").is_some() {
        search(&runtime, &setups);
        return;
    }

    // BENCH_PROFILE=<store>/<route> (say `redis/send_chat_100`) runs that one case for
    // BENCH_ITERATIONS (10,000) and nothing else, for a profiler to watch (BENCHMARKS.md).
    if let Ok(case) = std::env::var("BENCH_PROFILE") {
        let iterations: usize = std::env::var("BENCH_ITERATIONS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        let (store, route) = case.split_once('/').expect("BENCH_PROFILE=<store>/<route>");
        let setup = setups
            .iter()
            .find(|s| s.name == store)
            .expect("memory or redis");
        let (_, make) = cases()
            .into_iter()
            .find(|(name, _)| *name == route)
            .expect("a route of the bench");
        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..iterations {
                let response = handle(&setup.app, make()).await;
                assert!(response.status().is_success());
            }
        });
        println!(
            "{case}: {iterations} requests, {:?} each",
            started.elapsed() / iterations as u32
        );
        return;
    }

    let mut criterion = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for setup in &setups {
        let mut group = criterion.benchmark_group(format!("handle/{}", setup.name));
        for (route, make) in cases() {
            group.bench_function(route, |b| {
                b.to_async(&runtime).iter(|| handle(&setup.app, make()));
            });
        }
        group.finish();
    }
    criterion.final_summary();

    // `cargo bench -- <filter>` and `--list` are criterion's; the percentile pass runs on
    // a plain `cargo bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args.is_empty() {
        percentiles(&runtime, &setups);
    }
}
