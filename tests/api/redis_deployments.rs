//! Redis as users run it: over TLS (Upstash, ElastiCache in-transit encryption) and as a
//! Cluster (ElastiCache cluster mode, large Upstash plans).

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

use chat_proxy::chat::ChatId;
use chat_proxy::chat::Tenant;
use chat_proxy::config::{RedisTarget, StoreSettings};
use chat_proxy::store::{Prompts, RedisStore, Turns, Usage};

use crate::support::redis::RedisServer;
use crate::support::TestApp;

/// The session every deployment must carry: prompts, turns in order, transcript, clear.
async fn a_whole_session(t: &TestApp) {
    t.post("/system", json!({"content": "Global."})).await;
    t.post("/c1/system", json!({"content": "Chat."})).await;
    t.say("c1", "one").await;
    t.say("c1", "two").await;
    let last = t.openai.chat_bodies().await.pop().unwrap();
    let contents: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["Global.", "Chat.", "one", "reply to: one", "two"]
    );
    assert_eq!(t.transcript("c1").await.as_array().unwrap().len(), 4);
    t.post_raw("/c1/clear", "").await;
    assert_eq!(t.transcript("c1").await, json!([]));
    assert_eq!(
        t.get("/c1/system").await.json(),
        json!({"content": "Chat."})
    );
}

#[tokio::test]
async fn a_session_runs_over_tls() {
    let t = TestApp::over_tls(&[]).await;
    assert!(t.redis.url().starts_with("rediss://"));
    a_whole_session(&t).await;
}

#[tokio::test]
async fn the_older_host_form_uses_tls_by_default() {
    let redis = RedisServer::start_tls();
    let port = redis.port().to_string();
    let ca = redis.tls().ca.to_string_lossy().into_owned();
    let openai = crate::support::openai::FakeOpenAi::start().await;
    let config = chat_proxy::Config::from_lookup(|name| {
        let value = match name {
            "GPT_API_KEY" => crate::support::openai::API_KEY,
            "OPENAI_BASE_URL" => return Some(openai.base_url()),
            "REDIS_HOST" => "127.0.0.1",
            "REDIS_PORT" => &port,
            "REDIS_TLS_CA_FILE" => &ca,
            _ => return None,
        };
        Some(value.to_owned())
    })
    .unwrap();
    let app = chat_proxy::App::build(&config).unwrap();
    let request = lambda_http::http::Request::builder()
        .method("POST")
        .uri("/c1/chat")
        .body(lambda_http::Body::from(r#"{"content": "over tls"}"#))
        .unwrap();
    let response = chat_proxy::handle(&app, request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(redis.query(&["LLEN", "chat-proxy:chat:{c1}:turns"]), "1");
}

#[tokio::test]
async fn a_wrong_ca_fails_fast_and_says_why() {
    let redis = RedisServer::start_tls();
    let target = RedisTarget::Url(redis.url().into());
    let timeout = Duration::from_millis(1000);
    let store = RedisStore::connect(
        &target,
        StoreSettings::default(),
        timeout,
        Some(&redis.tls().other_ca),
    )
    .unwrap();
    let chat = ChatId::parse("c1").unwrap();
    // The guard is a hang check, far above the 1 s Redis timeout.
    let result = tokio::time::timeout(Duration::from_secs(8), store.turns(&Tenant::Open, &chat))
        .await
        .expect("answered instead of hanging");
    let error = result.unwrap_err().to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_session_runs_on_a_cluster() {
    let t = TestApp::over_cluster(&[]).await;
    a_whole_session(&t).await;
}

#[tokio::test]
async fn chats_spread_over_cluster_nodes_each_in_one_slot() {
    let t = TestApp::over_cluster(&[]).await;
    let chats: Vec<String> = (0..12).map(|i| format!("chat-{i}")).collect();
    for chat in &chats {
        t.post(&format!("/{chat}/system"), json!({"content": "p"}))
            .await;
        t.say(chat, "hello").await;
    }
    let keys: Vec<String> = t
        .all_keys()
        .into_iter()
        .filter(|k| k.contains(":chat:"))
        .collect();
    // Per chat: its prompt, its turns, their size, and the marker of its one turn.
    assert_eq!(keys.len(), 4 * chats.len(), "{keys:?}");
    // Each node holds some chats, and always every key of a chat, all in one slot.
    let tag = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_owned();
    let mut nodes_used = 0;
    for node in std::iter::once(&t.redis).chain(t.cluster.as_ref().unwrap().nodes.iter()) {
        let here: Vec<String> = node
            .query(&["KEYS", "*"])
            .lines()
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        nodes_used += usize::from(!here.is_empty());
        for key in here.iter().filter(|k| k.contains(":chat:")) {
            let siblings = keys.iter().filter(|k| tag(k) == tag(key));
            for sibling in siblings {
                assert!(
                    here.contains(sibling),
                    "{key} without {sibling} on its node"
                );
                assert_eq!(
                    node.query(&["CLUSTER", "KEYSLOT", key]),
                    node.query(&["CLUSTER", "KEYSLOT", sibling]),
                    "{key} and {sibling} share a slot"
                );
            }
        }
    }
    assert!(nodes_used >= 2, "12 chats all landed on one node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_turns_keep_their_pairs_on_a_cluster() {
    let t = TestApp::over_cluster(&[]).await;
    let questions: Vec<String> = (0..16).map(|i| format!("q{i}")).collect();
    join_all(questions.iter().map(|q| t.say("busy", q))).await;
    let transcript = t.transcript("busy").await;
    let messages = transcript.as_array().unwrap();
    assert_eq!(messages.len(), 32);
    for pair in messages.chunks(2) {
        assert_eq!(
            pair[1]["content"],
            format!("reply to: {}", pair[0]["content"].as_str().unwrap())
        );
    }
}

#[tokio::test]
async fn the_store_works_directly_on_a_cluster() {
    let cluster = crate::support::redis::RedisCluster::start();
    let target = RedisTarget::Url(cluster.url().into());
    let store = RedisStore::connect(
        &target,
        StoreSettings::default(),
        Duration::from_secs(2),
        None,
    )
    .unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)).await);
    let alice = Tenant::Caller("alice".into());
    store.set_global_prompt(&alice, "g").await.unwrap();
    let chat = ChatId::parse("x").unwrap();
    store.set_chat_prompt(&alice, &chat, "p").await.unwrap();
    let context = store.turn_context(&alice, &chat, None).await.unwrap();
    assert_eq!(context.global_prompt.as_deref(), Some("g"));
    assert_eq!(context.chat_prompt.as_deref(), Some("p"));
    let counted = store.count_request("caller:alice", "r1", 10).await.unwrap();
    assert_eq!(counted.count, 1);
}
