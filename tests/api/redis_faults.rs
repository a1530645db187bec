//! Redis failing under the proxy: 503 within the command timeout, and recovery without a
//! restart of the function.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::support::openai::chat_completion;
use crate::support::TestApp;

/// Hang guard: far above the 1 s Redis timeout the tests configure, far below Lambda's 30 s.
const GUARD: Duration = Duration::from_secs(8);

/// What the app logs on this thread (a `#[tokio::test]` runs its tasks on one) while the
/// guard lives, as the function's text lines.
fn capture_logs() -> (tracing::subscriber::DefaultGuard, Arc<Mutex<Vec<u8>>>) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(logs.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), logs)
}

async fn guarded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, call)
        .await
        .expect("answered instead of hanging")
}

#[tokio::test]
async fn redis_down_is_a_503_on_every_route_that_needs_it() {
    let mut t = TestApp::start().await;
    t.redis.stop();
    let calls = [
        t.get("/system").await,
        t.post("/system", json!({"content": "x"})).await,
        t.get("/c1/system").await,
        t.get("/c1/chat").await,
        guarded(t.post("/c1/chat", json!({"content": "hi"}))).await,
        t.post_raw("/c1/clear", "").await,
    ];
    for reply in calls {
        reply.assert_error(503, "storage_unavailable");
        assert!(
            !reply.text.contains("127.0.0.1"),
            "no internals in {}",
            reply.text
        );
    }
    // A turn that cannot read its history does not spend an upstream call.
    assert!(t.openai.chat_bodies().await.is_empty());
    // Routes that need no storage still work.
    assert_eq!(t.get("/").await.status, 200);
}

#[tokio::test]
async fn the_first_request_after_redis_returns_succeeds() {
    let mut t = TestApp::start().await;
    t.redis.stop();
    guarded(t.post("/c1/chat", json!({"content": "hi"})))
        .await
        .assert_error(503, "storage_unavailable");

    t.redis.restart();
    let reply = guarded(t.post("/c1/chat", json!({"content": "back?"}))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn killed_connections_are_survived_without_losing_history() {
    let t = TestApp::start().await;
    t.say("c1", "before").await;
    for round in 0..3 {
        let killed = t.redis.query(&["CLIENT", "KILL", "TYPE", "normal"]);
        assert_ne!(
            killed, "0",
            "round {round}: the proxy's connection was killed"
        );
        let reply = guarded(t.post("/c1/chat", json!({"content": format!("after {round}")}))).await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text);
    }
    let transcript = t.transcript("c1").await;
    let questions: Vec<&str> = transcript
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(questions, vec!["before", "after 0", "after 1", "after 2"]);
}

#[tokio::test]
async fn an_unresponsive_redis_is_a_503_within_the_timeout() {
    let t = TestApp::start().await;
    t.say("c1", "kept").await;
    // DEBUG SLEEP blocks the server, as a stalled or overloaded Redis would.
    let redis_port = t.redis.port();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "DEBUG", "SLEEP", "3"])
            .output()
    });
    std::thread::sleep(Duration::from_millis(200));
    let reply = guarded(t.get("/c1/chat")).await;
    reply.assert_error(503, "storage_unavailable");
    let _ = sleeper.join();
    // Once Redis answers again, so does the proxy, with the history intact.
    let transcript = guarded(t.get("/c1/chat")).await;
    assert_eq!(transcript.status, 200, "{}", transcript.text);
    assert_eq!(transcript.json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn redis_lost_after_upstream_was_asked_answers_the_paid_reply_unstored() {
    let (_guard, logs) = capture_logs();
    let t = TestApp::start().await;
    t.openai
        .always_chat(
            ResponseTemplate::new(200)
                .set_body_json(chat_completion("m", "the paid answer", 1))
                .set_delay(Duration::from_millis(500)),
        )
        .await;
    let turn = t.post("/c1/chat", json!({"content": "a question to keep private"}));
    let stop_while_upstream_thinks = async {
        // The read is done once upstream has the request: only the write is left.
        t.openai.wait_for_chat_requests(1).await;
        let _ = t.redis.cli(&["SHUTDOWN", "NOSAVE"]);
    };
    let (reply, ()) = guarded(async { tokio::join!(turn, stop_while_upstream_thinks) }).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["content"], "the paid answer");
    assert_eq!(reply.header("x-chat-stored"), Some("false"));
    // Logged at ERROR, without the message's text.
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines()
            .any(|l| l.contains("ERROR") && l.contains("paid for but could not be stored")),
        "{logs}"
    );
    assert!(!logs.contains("the paid answer"), "{logs}");
    assert!(!logs.contains("a question to keep private"), "{logs}");
}

#[tokio::test]
async fn a_stored_turn_says_nothing_of_storage() {
    let t = TestApp::start().await;
    let reply = t.post("/c1/chat", json!({"content": "hi"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-chat-stored"), None);
}

#[tokio::test]
async fn a_write_cut_before_its_answer_is_sent_again_and_stored_once() {
    let t = TestApp::over_relay(&[]).await;
    t.say("c1", "before").await;
    // The append script reaches Redis and runs; its answer is lost with the connection.
    // The turn's JSON, in the write's arguments (scripts go by their SHA-1, not their text).
    t.relay().cut_after("\"user\":\"cut\"");
    let reply = guarded(t.post("/c1/chat", json!({"content": "cut"}))).await;
    assert_eq!(t.relay().cuts(), 1, "the write's connection was cut");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-chat-stored"), None, "stored after all");
    let questions: Vec<String> = t
        .transcript("c1")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(questions, ["before", "cut"], "stored exactly once");
}

#[tokio::test]
async fn a_prompt_write_cut_before_its_answer_is_sent_again() {
    let t = TestApp::over_relay(&[]).await;
    t.relay().cut_after("Answer tersely.");
    let reply = guarded(t.post("/c1/system", json!({"content": "Answer tersely."}))).await;
    assert_eq!(t.relay().cuts(), 1);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        t.get("/c1/system").await.json(),
        json!({"content": "Answer tersely."})
    );
}

#[tokio::test]
async fn a_clear_cut_before_its_answer_is_sent_again() {
    let t = TestApp::over_relay(&[]).await;
    t.say("c1", "to be cleared").await;
    // The clear is the one script the request runs, and its first command.
    t.relay().cut_after("EVALSHA");
    let reply = guarded(t.post_raw("/c1/clear", "")).await;
    assert_eq!(t.relay().cuts(), 1);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(t.transcript("c1").await, json!([]));
}

#[tokio::test]
async fn a_clear_sent_again_does_not_refuse_a_turn_read_after_it() {
    let t = TestApp::over_relay(&[]).await;
    t.say("c1", "to be cleared").await;
    t.relay().cut_after("EVALSHA");
    assert_eq!(guarded(t.post_raw("/c1/clear", "")).await.status, 200);
    assert_eq!(t.relay().cuts(), 1);
    // The clear ran twice on the wire, and changed the chat once: one turn and one clear,
    // its floor at the clear's version (a floor raised twice would refuse a turn read
    // between the two runs).
    let meta = "chat-proxy:chat:{c1}:meta";
    assert_eq!(t.redis.query(&["HMGET", meta, "v", "floor"]), "2\n2");
    t.say("c1", "after").await;
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_item_deletion_cut_before_its_answer_is_sent_again_and_answers_once() {
    let t = TestApp::over_relay(&[]).await;
    let made = t
        .post(
            "/v1/conversations",
            json!({"items": [{"type": "message", "role": "user", "content": "a"},
                             {"type": "message", "role": "user", "content": "b"}]}),
        )
        .await;
    let conversation = made.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{conversation}/items");
    let first = t.get(&path).await.json()["data"][0]["id"].clone();
    let first = first.as_str().unwrap();
    // The rewrite is the one command that names its own marker.
    t.relay().cut_after(":write:");
    let deleted = guarded(t.call(
        lambda_http::http::Method::DELETE,
        &format!("{path}/{first}"),
        lambda_http::Body::Empty,
    ))
    .await;
    assert_eq!(t.relay().cuts(), 1, "the rewrite's connection was cut");
    // Sent again, it found its own marker: done, not a chat that moved or an item gone.
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let left = t.get(&path).await.json();
    assert_eq!(left["data"].as_array().unwrap().len(), 1, "{left}");
}

#[tokio::test]
async fn a_rate_count_cut_before_its_answer_is_sent_again_and_counts_once() {
    let t = TestApp::over_relay(&[("RATE_LIMIT_PER_MINUTE", "2")]).await;
    // The count is the request's first command.
    t.relay().cut_after("EVALSHA");
    let reply = guarded(t.get("/system")).await;
    assert_eq!(t.relay().cuts(), 1, "the count's connection was cut");
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The count ran before the cut and ran again on the new connection: once in the window.
    assert_eq!(
        t.redis.query(&["HLEN", "chat-proxy:requests:ip:unknown"]),
        "1"
    );
    // So the second request of the minute is within the limit, and the third is not.
    assert_eq!(guarded(t.get("/system")).await.status, 200);
    guarded(t.get("/system"))
        .await
        .assert_error(429, "rate_limit_exceeded");
}

async fn keyed(
    t: &TestApp,
    path: &str,
    body: serde_json::Value,
    key: &str,
) -> crate::support::Reply {
    t.call_with(
        lambda_http::http::Method::POST,
        path,
        lambda_http::Body::from(body.to_string()),
        &[("idempotency-key", key)],
    )
    .await
}

#[tokio::test]
async fn a_claim_cut_before_its_answer_is_sent_again_and_stays_its_requests() {
    let t = TestApp::over_relay(&[]).await;
    // The claim itself (`pending`, the request's fingerprint and token): nothing else the
    // request sends holds it.
    t.relay().cut_after("pending\n");
    let reply = guarded(keyed(&t, "/c1/chat", json!({"content": "once"}), "k-1")).await;
    assert_eq!(t.relay().cuts(), 1, "the claim's connection was cut");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["content"], "reply to: once");
    // The retry gets that answer: the key was this request's, not locked against it.
    let retry = guarded(keyed(&t, "/c1/chat", json!({"content": "once"}), "k-1")).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(t.openai.chat_bodies().await.len(), 1);
}

#[tokio::test]
async fn a_release_cut_before_its_answer_is_sent_again_and_the_retry_runs() {
    let t = TestApp::over_relay(&[]).await;
    // Three server errors: the turn and its two retries fail, and the key is released.
    t.openai.fail_chat(ResponseTemplate::new(500), 3).await;
    let request = keyed(&t, "/c1/chat", json!({"content": "again"}), "k-2");
    // Once the claim is made (upstream has the first try), the next command that holds the
    // claim is its release.
    let arm = async {
        t.openai.wait_for_chat_requests(1).await;
        t.relay().cut_after("pending\n");
    };
    let (failed, ()) = guarded(async { tokio::join!(request, arm) }).await;
    failed.assert_error(502, "upstream_error");
    assert_eq!(t.relay().cuts(), 1, "the release's connection was cut");
    let retry = guarded(keyed(&t, "/c1/chat", json!({"content": "again"}), "k-2")).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), None, "asked anew");
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_write_that_fails_is_not_taken_as_stored_and_frees_its_key() {
    let t = TestApp::start().await;
    t.say("c1", "before").await;
    t.openai
        .fail_chat(
            ResponseTemplate::new(200)
                .set_body_json(chat_completion("m", "the paid answer", 1))
                .set_delay(Duration::from_millis(300)),
            1,
        )
        .await;
    // While upstream thinks, the chat's meta key turns into a string: the turn's write
    // fails on it, after the read and before writing anything.
    let meta = "chat-proxy:chat:{c1}:meta";
    let turn = keyed(&t, "/c1/chat", json!({"content": "kept?"}), "k-3");
    let corrupt = async {
        t.openai.wait_for_chat_requests(2).await;
        t.redis.query(&["SET", meta, "not a hash"]);
    };
    let (reply, ()) = guarded(async { tokio::join!(turn, corrupt) }).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.header("x-chat-stored"),
        Some("false"),
        "neither try of the write was taken for a success"
    );
    let markers = t
        .keys()
        .into_iter()
        .filter(|key| key.contains(":turn:"))
        .count();
    assert_eq!(markers, 1, "the first turn's marker only: {:?}", t.keys());
    assert!(
        !t.keys().iter().any(|key| key.contains(":idem:")),
        "the unstored answer is not kept, and its claim was freed: {:?}",
        t.keys()
    );
    // Once the chat can be written again, a retry with the same key runs.
    t.redis.query(&["DEL", meta]);
    let retry = guarded(keyed(&t, "/c1/chat", json!({"content": "kept?"}), "k-3")).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("idempotent-replayed"), None);
    assert_eq!(retry.header("x-chat-stored"), None);
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_read_cut_before_its_answer_is_sent_again() {
    let t = TestApp::over_relay(&[]).await;
    t.say("c1", "kept").await;
    t.relay().cut_after("LRANGE");
    let reply = guarded(t.get("/c1/chat")).await;
    assert_eq!(t.relay().cuts(), 1);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn with_the_default_timeout_a_stalled_redis_is_a_503_within_two_seconds() {
    // REDIS_TIMEOUT_MS at its default: the bound docs/http-api.md promises.
    let redis = crate::support::redis::RedisServer::start();
    let openai = crate::support::openai::FakeOpenAi::start().await;
    let mut config = crate::support::config_for(&redis.url(), &openai.base_url(), &[]);
    config.redis_timeout =
        chat_proxy::Config::from_lookup(|name| (name == "GPT_API_KEY").then(|| "k".to_owned()))
            .unwrap()
            .redis_timeout;
    let app = chat_proxy::App::build(&config).unwrap();
    let request = || {
        lambda_http::http::Request::builder()
            .uri("/c1/chat")
            .body(lambda_http::Body::Empty)
            .unwrap()
    };
    assert_eq!(
        chat_proxy::handle(&app, request()).await.status(),
        200,
        "warm"
    );

    let port = redis.port();
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "4"])
            .output()
    });
    std::thread::sleep(Duration::from_millis(200));
    let sent = std::time::Instant::now();
    let response = chat_proxy::handle(&app, request()).await;
    let waited = sent.elapsed();
    assert_eq!(response.status(), 503);
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    let _ = sleeper.join();
}
