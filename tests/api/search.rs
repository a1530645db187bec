//! `GET /chats?q=`: a caller's chats found by their title and by what was said in them,
//! both sides and every door, sealed or plain, paged like the list, bounded in what one
//! request reads, and never another caller's.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};

use crate::support::{send_to, Reply, TestApp};

const KEYS: &str = "alice:sk-alice-1,bob:sk-bob-2";

async fn search(t: &TestApp, query: &str) -> Value {
    let reply = t.get(&format!("/chats?{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn ids(page: &Value) -> Vec<String> {
    page["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chat| chat["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

async fn post(t: &TestApp, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
    let reply = t
        .call_with(Method::POST, path, Body::from(body.to_string()), headers)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
}

/// Chats of every door, each saying something of its own.
async fn chats_of_every_door(t: &TestApp) -> String {
    t.say("seed", "Where do the Puffins nest in spring?").await;
    tick().await;
    post(
        t,
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "the lighthouse keeper's log"}]}),
        &[("x-chat-id", "sdk")],
    )
    .await;
    tick().await;
    let conversation = post(t, "/v1/conversations", json!({}), &[]).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        t,
        "/v1/responses",
        json!({"input": "a question about tides", "conversation": conversation}),
        &[],
    )
    .await;
    tick().await;
    t.say("titled", "costs").await;
    post(t, "/titled/title", json!({"title": "Harbour Budget"}), &[]).await;
    conversation
}

#[tokio::test]
async fn a_search_finds_titles_questions_and_answers_of_every_door_in_any_case() {
    let t = TestApp::start().await;
    let conversation = chats_of_every_door(&t).await;

    // A user's words on the seed route, in another case.
    t.say("seed", "and in winter?").await;
    let page = search(&t, "q=puffins").await;
    assert_eq!(ids(&page), ["seed"]);
    let hit = &page["chats"][0];
    // The question and its answer (`reply to: ...`) hold it: the newest is shown.
    assert_eq!(hit["matches"], 2);
    assert_eq!(hit["match"]["in"], "message");
    assert_eq!(hit["match"]["role"], "assistant");
    assert_eq!(hit["match"]["index"], 1);
    assert_eq!(
        hit["match"]["snippet"],
        "reply to: Where do the Puffins nest in spring?"
    );
    assert_eq!(hit["title"], "Where do the Puffins nest in spring?");
    // A user's words alone.
    let page = search(&t, "q=IN%20WINTER").await;
    assert_eq!(ids(&page), ["seed"]);
    assert_eq!(page["chats"][0]["match"]["role"], "assistant");
    let page = search(&t, "q=and%20in%20winter%3F").await;
    assert_eq!(page["chats"][0]["matches"], 2);

    // The reply's side: only the fake's answers say "reply to".
    let page = search(&t, "q=REPLY%20TO").await;
    let mut found = ids(&page);
    found.sort();
    let mut expected = vec![
        "seed".to_owned(),
        "sdk".to_owned(),
        "titled".to_owned(),
        conversation.clone(),
    ];
    expected.sort();
    assert_eq!(found, expected);
    for hit in page["chats"].as_array().unwrap() {
        assert_eq!(hit["match"]["role"], "assistant", "{hit}");
        // The index is the message's place in GET /<chat_id>/chat.
        let id = hit["id"].as_str().unwrap();
        let transcript = t.transcript(id).await;
        let index = hit["match"]["index"].as_u64().unwrap() as usize;
        let said = transcript[index]["content"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(said.contains("reply to"), "{said}");
    }

    // /v1/chat/completions and a Responses conversation.
    assert_eq!(ids(&search(&t, "q=keeper%27s").await), ["sdk"]);
    assert_eq!(ids(&search(&t, "q=tides").await), [conversation]);
    // A title set by hand.
    let page = search(&t, "q=harbour%20budget").await;
    assert_eq!(ids(&page), ["titled"]);
    assert_eq!(page["chats"][0]["match"], json!({"in": "title"}));
    // Nothing found: an empty page that says it read everything.
    let none = search(&t, "q=albatross").await;
    assert_eq!(
        none,
        json!({"chats": [], "has_more": false, "next": null, "scanned": 4, "unreadable": 0,
            "cut_short": false})
    );
}

#[tokio::test]
async fn a_sealed_chat_is_found_and_redis_gains_nothing_in_the_clear() {
    let t = TestApp::with_env(&[(
        "SEAL_KEYS",
        "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )])
    .await;
    t.say("sealed", "the cormorant colony").await;
    let before = t.dump();
    // Its question and its answer are found, opened.
    let page = search(&t, "q=cormorant").await;
    assert_eq!(ids(&page), ["sealed"]);
    assert_eq!(page["chats"][0]["matches"], 2);
    assert_eq!(
        page["chats"][0]["match"]["snippet"],
        "reply to: the cormorant colony"
    );
    let after: Vec<(String, String)> = t
        .dump()
        .into_iter()
        .filter(|(key, _)| !key.contains(":rate:") && !key.contains(":usage:"))
        .collect();
    let before: Vec<(String, String)> = before
        .into_iter()
        .filter(|(key, _)| !key.contains(":rate:") && !key.contains(":usage:"))
        .collect();
    assert_eq!(after, before, "a search writes nothing");
    assert!(after.iter().all(|(_, value)| !value.contains("cormorant")));
}

#[tokio::test]
async fn pages_of_hits_follow_next_without_repeating_or_skipping() {
    let t = TestApp::start().await;
    for i in 0..7 {
        t.say(&format!("match-{i}"), &format!("otters {i}")).await;
        tick().await;
        t.say(&format!("other-{i}"), "seals").await;
        tick().await;
    }
    let first = search(&t, "q=otters&limit=3").await;
    assert_eq!(ids(&first), ["match-6", "match-5", "match-4"]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["cut_short"], false);
    let next = first["next"].as_str().unwrap();
    let second = search(&t, &format!("q=otters&limit=3&after={next}")).await;
    assert_eq!(ids(&second), ["match-3", "match-2", "match-1"]);
    // Another instance goes on where this one stopped.
    let next = second["next"].as_str().unwrap();
    let request = t.get_request(&format!("/chats?q=otters&limit=3&after={next}"));
    let third = send_to(t.another_instance(), request).await;
    assert_eq!(third.status, 200, "{}", third.text);
    let third = third.json();
    assert_eq!(ids(&third), ["match-0"]);
    assert_eq!(third["has_more"], false);
    assert_eq!(third["next"], Value::Null);
}

#[tokio::test]
async fn a_search_reads_at_most_500_chats_and_says_where_to_go_on() {
    let t = TestApp::start().await;
    // The oldest chat holds the word; 520 newer ones do not.
    t.say("oldest", "the narwhal").await;
    for i in 0..520 {
        let document = json!({"into": format!("chat-{i}"),
            "messages": [{"role": "user", "content": "seals"}, {"role": "assistant", "content": "yes"}]});
        t.post("/chats/import", document).await;
    }
    let first = search(&t, "q=narwhal").await;
    assert_eq!(first["chats"], json!([]));
    assert_eq!(first["scanned"], 500);
    assert_eq!(first["cut_short"], true, "{first}");
    assert_eq!(first["has_more"], true);
    let next = first["next"].as_str().unwrap();
    let second = search(&t, &format!("q=narwhal&after={next}")).await;
    assert_eq!(ids(&second), ["oldest"]);
    assert_eq!(second["scanned"], 21);
    assert_eq!(second["cut_short"], false);
    assert_eq!(second["has_more"], false);
}

#[tokio::test]
async fn a_caller_never_finds_another_callers_chats() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", KEYS)]).await;
    let alice = [("authorization", "Bearer sk-alice-1")];
    let bob = [("authorization", "Bearer sk-bob-2")];
    post(
        &t,
        "/diary/chat",
        json!({"content": "alice's secret walrus"}),
        &alice,
    )
    .await;
    let as_bob = t
        .call_with(Method::GET, "/chats?q=walrus", Body::Empty, &bob)
        .await;
    assert_eq!(as_bob.status, 200, "{}", as_bob.text);
    assert_eq!(as_bob.json()["chats"], json!([]));
    let as_alice = t
        .call_with(Method::GET, "/chats?q=walrus", Body::Empty, &alice)
        .await;
    assert_eq!(ids(&as_alice.json()), ["diary"]);
    let anonymous = t.get("/chats?q=walrus").await;
    anonymous.assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn a_bad_query_is_a_clear_400() {
    let t = TestApp::start().await;
    t.say("kept", "hello").await;
    let before = t.dump();
    let long = "a".repeat(201);
    for (query, param) in [
        ("q=", "q"),
        ("q=%20%20", "q"),
        (&*format!("q={long}"), "q"),
        ("q=hello&limit=0", "limit"),
        ("q=hello&limit=101", "limit"),
        ("q=hello&after=nope", "after"),
    ] {
        let reply = t.get(&format!("/chats?{query}")).await;
        reply.assert_error(400, "invalid_value");
        assert_eq!(reply.json()["error"]["param"], param, "{query}");
    }
    let after: Vec<_> = t
        .dump()
        .into_iter()
        .filter(|(key, _)| !key.contains(":rate:"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(key, _)| !key.contains(":rate:"))
        .collect();
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_chat_that_does_not_open_is_passed_over_and_counted() {
    let t = TestApp::start().await;
    t.say("plain", "otters in the bay").await;
    tick().await;
    // A chat begun plain, then given a turn sealed under a key this instance does not hold.
    t.say("locked", "otters too").await;
    let sealed = t.instance_sealed_with(Some("k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
    let said = t.request("/locked/chat", json!({"content": "and more"}), &[]);
    assert_eq!(send_to(sealed, said).await.status, 200);
    assert_eq!(
        t.get("/locked/chat").await.status,
        500,
        "this instance cannot open it"
    );
    let page = search(&t, "q=otters").await;
    assert_eq!(ids(&page), ["plain"]);
    assert_eq!(page["unreadable"], 1);
    assert_eq!(page["scanned"], 2);
}
