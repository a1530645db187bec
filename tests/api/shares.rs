//! Read-only links: `POST /<chat_id>/share` freezes a snapshot of the chat behind a token
//! of 256 random bits (kept nowhere), which anyone reads at `GET /shared/<token>` with no
//! key; only its
//! owner lists and revokes it; a revoked, expired or deleted chat's link is a 404 and its
//! snapshot is gone from Redis; nothing of the owner is reachable through it.

use base64::Engine;
use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::{Reply, TestApp};

const KEYS: &str = "alice:sk-alice-1,bob:sk-bob-2";
const ALICE: (&str, &str) = ("authorization", "Bearer sk-alice-1");
const BOB: (&str, &str) = ("authorization", "Bearer sk-bob-2");

async fn call(
    t: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    who: &[(&str, &str)],
) -> Reply {
    let body = body.map_or(Body::Empty, |b| Body::from(b.to_string()));
    t.call_with(method, path, body, who).await
}

async fn share(t: &TestApp, chat: &str, body: Value) -> Value {
    let reply = call(
        t,
        Method::POST,
        &format!("/{chat}/share"),
        Some(body),
        &[ALICE],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn share_keys(t: &TestApp) -> Vec<String> {
    t.all_keys()
        .into_iter()
        .filter(|key| key.contains(":share:"))
        .collect()
}

async fn alice_app(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("PROXY_API_KEYS", KEYS)];
    env.extend_from_slice(extra);
    let t = TestApp::with_env(&env).await;
    call(
        &t,
        Method::POST,
        "/trip/system",
        Some(json!({"content": "secret prompt"})),
        &[ALICE],
    )
    .await;
    for text in ["first question", "second question"] {
        let reply = call(
            &t,
            Method::POST,
            "/trip/chat",
            Some(json!({"content": text})),
            &[ALICE],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    t
}

#[tokio::test]
async fn a_link_shows_the_chat_as_it_was_to_anyone_without_a_key() {
    let t = alice_app(&[]).await;
    let link = share(&t, "trip", json!({})).await;
    let token = link["token"].as_str().unwrap();
    // 256 random bits, unpadded base64url.
    let bits = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap();
    assert_eq!(bits.len(), 32);
    assert_eq!(link["path"], format!("/shared/{token}"));
    // The token opens the snapshot, so it is kept nowhere: the store knows the link by
    // its SHA-256.
    let id = link["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    for (key, value) in t.dump() {
        assert!(!key.contains(token) && !value.contains(token), "{key}");
    }
    assert_eq!(
        link["expires_at"].as_u64().unwrap() - link["created_at"].as_u64().unwrap(),
        30 * 24 * 3600
    );
    let transcript = call(&t, Method::GET, "/trip/chat", None, &[ALICE])
        .await
        .json();

    // A later turn is not in it.
    call(
        &t,
        Method::POST,
        "/trip/chat",
        Some(json!({"content": "third"})),
        &[ALICE],
    )
    .await;
    let shared = t.get(link["path"].as_str().unwrap()).await;
    assert_eq!(shared.status, 200, "{}", shared.text);
    assert_eq!(shared.header("cache-control"), Some("no-store"));
    let snapshot = shared.json();
    assert_eq!(snapshot["object"], "chat.shared");
    assert_eq!(snapshot["title"], "first question");
    assert_eq!(snapshot["messages"], transcript);
    assert_eq!(
        snapshot["system"],
        Value::Null,
        "the prompt only when asked"
    );
    // Nothing of its owner: not the chat's id, the caller's name or key, the prompt.
    for private in ["trip", "alice", "sk-alice", "secret prompt"] {
        assert!(
            !shared.text.contains(private),
            "{private} in {}",
            shared.text
        );
    }
    // Another caller's key changes nothing: the token is the key.
    let as_bob = call(&t, Method::GET, &format!("/shared/{token}"), None, &[BOB]).await;
    assert_eq!(as_bob.json(), snapshot);

    // With the prompt, when asked.
    let with_prompt = share(
        &t,
        "trip",
        json!({"include_system": true, "expires_in": 3600}),
    )
    .await;
    let path = with_prompt["path"].as_str().unwrap().to_owned();
    assert_eq!(t.get(&path).await.json()["system"], "secret prompt");
    // The snapshot expires with its link, in Redis.
    let key = share_keys(&t)
        .into_iter()
        .find(|key| key.ends_with(with_prompt["id"].as_str().unwrap()))
        .unwrap();
    let ttl: u64 = t.redis.query(&["TTL", &key]).trim().parse().unwrap();
    assert!((3590..=3600).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn only_the_owner_lists_and_revokes_and_a_revoked_link_is_gone() {
    let t = alice_app(&[]).await;
    let older = share(&t, "trip", json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let newer = share(&t, "trip", json!({})).await;
    let listed = call(&t, Method::GET, "/trip/shares", None, &[ALICE])
        .await
        .json();
    let tokens: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|link| link["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        tokens,
        [newer["id"].as_str().unwrap(), older["id"].as_str().unwrap()]
    );

    // Bob has no chat `trip`: he neither lists nor revokes Alice's links.
    let token = older["token"].as_str().unwrap();
    call(&t, Method::GET, "/trip/shares", None, &[BOB])
        .await
        .assert_error(404, "chat_not_found");
    let revoke = format!("/trip/shares/{token}");
    call(&t, Method::DELETE, &revoke, None, &[BOB])
        .await
        .assert_error(404, "share_not_found");
    assert_eq!(t.get(&format!("/shared/{token}")).await.status, 200);

    // Alice revokes it: a 404, its snapshot gone from Redis, and off the list.
    let revoked = call(&t, Method::DELETE, &revoke, None, &[ALICE]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    t.get(&format!("/shared/{token}"))
        .await
        .assert_error(404, "share_not_found");
    let id = older["id"].as_str().unwrap();
    assert!(share_keys(&t).iter().all(|key| !key.ends_with(id)));
    assert_eq!(share_keys(&t).len(), 1, "the other link's snapshot");
    call(&t, Method::DELETE, &revoke, None, &[ALICE])
        .await
        .assert_error(404, "share_not_found");
    let listed = call(&t, Method::GET, "/trip/shares", None, &[ALICE])
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(
        listed["data"][0].get("token").is_none(),
        "shown once, when made"
    );
    // The other is revoked by the id the list shows.
    let by_id = format!("/trip/shares/{}", newer["id"].as_str().unwrap());
    let revoked = call(&t, Method::DELETE, &by_id, None, &[ALICE]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    t.get(newer["path"].as_str().unwrap())
        .await
        .assert_error(404, "share_not_found");
}

#[tokio::test]
async fn a_snapshot_whose_link_is_not_listed_is_never_answered_and_goes() {
    // As when a link is made while its chat is being deleted: the snapshot is kept after
    // the deletion took the chat's list away.
    let t = alice_app(&[]).await;
    let link = share(&t, "trip", json!({})).await;
    let id = link["id"].as_str().unwrap();
    let list = "chat-proxy:caller:alice:chat:{trip}:shares";
    assert_eq!(t.redis.query(&["HDEL", list, id]).trim(), "1");
    t.get(link["path"].as_str().unwrap())
        .await
        .assert_error(404, "share_not_found");
    assert_eq!(share_keys(&t), Vec::<String>::new(), "and it is dropped");
}

#[tokio::test]
async fn a_chat_has_at_most_100_links_and_the_link_route_is_rate_limited() {
    let t = alice_app(&[("RATE_LIMIT_PER_MINUTE", "300")]).await;
    let mut last = Value::Null;
    for _ in 0..100 {
        last = share(&t, "trip", json!({})).await;
    }
    let more = call(&t, Method::POST, "/trip/share", Some(json!({})), &[ALICE]).await;
    more.assert_error(409, "too_many_links");
    let revoke = format!("/trip/shares/{}", last["id"].as_str().unwrap());
    assert_eq!(
        call(&t, Method::DELETE, &revoke, None, &[ALICE])
            .await
            .status,
        200
    );
    share(&t, "trip", json!({})).await;
    // Reading a link counts against the address's limit, as an open API's caller.
    let path = last["path"].as_str().unwrap().to_owned();
    let mut limited = false;
    for _ in 0..310 {
        let reply = t.get(&path).await;
        if reply.status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "GET /shared/<token> is rate limited");
}

#[tokio::test]
async fn an_expired_link_is_a_404_and_a_deleted_chats_links_go_with_it() {
    let t = alice_app(&[]).await;
    let link = share(&t, "trip", json!({"expires_in": 60})).await;
    let token = link["token"].as_str().unwrap().to_owned();
    let id = link["id"].as_str().unwrap();
    let key = share_keys(&t)
        .into_iter()
        .find(|key| key.ends_with(id))
        .unwrap();
    // Redis lets it expire (made to happen now).
    t.redis.query(&["PEXPIRE", &key, "1"]);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    t.get(&format!("/shared/{token}"))
        .await
        .assert_error(404, "share_not_found");

    let kept = share(&t, "trip", json!({})).await;
    let path = kept["path"].as_str().unwrap().to_owned();
    assert_eq!(t.get(&path).await.status, 200);
    let deleted = call(&t, Method::DELETE, "/trip", None, &[ALICE]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    t.get(&path).await.assert_error(404, "share_not_found");
    assert_eq!(share_keys(&t), Vec::<String>::new());
}

#[tokio::test]
async fn a_sealed_snapshot_holds_nothing_in_the_clear() {
    let t = alice_app(&[(
        "SEAL_KEYS",
        "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )])
    .await;
    let link = share(&t, "trip", json!({"include_system": true})).await;
    let shared = t.get(link["path"].as_str().unwrap()).await;
    assert_eq!(shared.json()["messages"][0]["content"], "first question");
    for (key, value) in t.dump() {
        assert!(!value.contains("question"), "{key}: {value}");
        assert!(!value.contains("secret prompt"), "{key}: {value}");
    }
}

#[tokio::test]
async fn bad_share_requests_are_clear_400s_and_change_nothing() {
    let t = alice_app(&[("SHARE_MAX_TTL_SECONDS", "86400")]).await;
    call(
        &t,
        Method::POST,
        "/empty/system",
        Some(json!({"content": "no turns"})),
        &[ALICE],
    )
    .await;
    let before = t.dump();
    for (body, param) in [
        (json!({"expires_in": 59}), "expires_in"),
        (json!({"expires_in": 86401}), "expires_in"),
        (json!({"expires_in": "1h"}), "expires_in"),
        (json!({"include_system": "yes"}), "include_system"),
    ] {
        let reply = call(
            &t,
            Method::POST,
            "/trip/share",
            Some(body.clone()),
            &[ALICE],
        )
        .await;
        reply.assert_error(400, "invalid_value");
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
    }
    let unknown = call(
        &t,
        Method::POST,
        "/trip/share",
        Some(json!({"public": true})),
        &[ALICE],
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    // A chat with nothing said, and one that does not exist.
    let empty = call(&t, Method::POST, "/empty/share", Some(json!({})), &[ALICE]).await;
    empty.assert_error(409, "nothing_to_share");
    let missing = call(
        &t,
        Method::POST,
        "/nowhere/share",
        Some(json!({})),
        &[ALICE],
    )
    .await;
    missing.assert_error(404, "chat_not_found");
    // A token of the wrong shape is no link.
    t.get("/shared/not-a-token")
        .await
        .assert_error(404, "not_found");
    let wrong = format!("/shared/{}", "A".repeat(43));
    t.get(&wrong).await.assert_error(404, "share_not_found");
    // Without a key, only the link's route answers.
    t.get("/trip/shares")
        .await
        .assert_error(401, "invalid_api_key");
    let after: Vec<_> = t
        .dump()
        .into_iter()
        .filter(|(key, _)| !key.contains(":requests:"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(key, _)| !key.contains(":requests:"))
        .collect();
    assert_eq!(after, before);
}
