//! A caller's chats as a chat app keeps them: the list, titles, deletion, regenerate,
//! edit, fork, export and import, over a real Redis (and Cluster), between instances and
//! callers, with what upstream was sent checked.

use lambda_http::http::Method;
use lambda_http::Body;
use serde_json::{json, Value};
use wiremock::ResponseTemplate;

use crate::support::openai::{chat_completion, error_response, tool_call_completion, user_text};
use crate::support::{Reply, TestApp};

const KEYS: &str = "alice:sk-alice-1,bob:sk-bob-2";

async fn call(
    t: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Reply {
    let body = body.map_or(Body::Empty, |b| Body::from(b.to_string()));
    let auth = key.map(|key| format!("Bearer {key}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    t.call_with(method, path, body, &headers).await
}

fn ids(list: &Value) -> Vec<String> {
    list["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|chat| chat["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn list(t: &TestApp, query: &str) -> Value {
    let reply = t.get(&format!("/chats{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

/// The texts of a chat's transcript, in order.
pub(crate) async fn said(t: &TestApp, chat: &str) -> Vec<String> {
    t.transcript(chat)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Lets a millisecond pass: the list orders chats by their last write, in milliseconds,
/// and chats written in the same one by id.
async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

/// What a request upstream said besides its system prompts.
fn spoken(sent: &Value) -> Vec<String> {
    sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .map(user_text)
        .collect()
}

/// Upstream's next chat completion answers `text`.
async fn next_answer(t: &TestApp, text: &str) {
    t.openai
        .fail_chat(
            ResponseTemplate::new(200).set_body_json(chat_completion("gpt-4o-mini", text, 9)),
            1,
        )
        .await;
}

#[tokio::test]
async fn the_list_holds_the_callers_chats_newest_write_first_across_instances() {
    let t = TestApp::start().await;
    assert_eq!(
        list(&t, "").await,
        json!({"chats": [], "has_more": false, "next": null})
    );
    t.say(
        "trip",
        "Plan a trip to Lisbon in May, with a day in Sintra and good food",
    )
    .await;
    tick().await;
    // Written by another instance of the function, listed by this one.
    let other = t.another_instance();
    let reply = crate::support::send_to(
        other,
        t.request("/notes/chat", json!({"content": "notes"}), &[]),
    )
    .await;
    assert_eq!(reply.status, 200);
    tick().await;
    t.post("/prompted/system", json!({"content": "Be brief."}))
        .await;
    let listed = list(&t, "").await;
    assert_eq!(ids(&listed), ["prompted", "notes", "trip"]);
    let trip = &listed["chats"][2];
    assert_eq!(
        trip["title"],
        "Plan a trip to Lisbon in May, with a day in Sintra and good"
    );
    assert_eq!(trip["messages"], 2);
    assert_eq!(listed["chats"][0]["title"], Value::Null, "no question yet");
    assert_eq!(listed["chats"][0]["messages"], 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for chat in listed["chats"].as_array().unwrap() {
        let (created, updated) = (
            chat["created_at"].as_u64().unwrap(),
            chat["updated_at"].as_u64().unwrap(),
        );
        assert!(
            created <= updated && updated <= now && now - created < 60,
            "{chat}"
        );
    }
    tick().await;
    // A turn moves its chat to the top.
    t.say("trip", "and in June?").await;
    assert_eq!(ids(&list(&t, "").await), ["trip", "prompted", "notes"]);
    assert_eq!(list(&t, "").await["chats"][0]["messages"], 4);
}

#[tokio::test]
async fn pages_follow_next_without_repeating_or_skipping() {
    let t = TestApp::start().await;
    let names: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
    for name in &names {
        t.say(name, "hi").await;
        tick().await;
    }
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let page = list(&t, &query).await;
        seen.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(page["has_more"], true);
                query = format!("?limit=3&after={next}");
            }
            None => {
                assert_eq!(page["has_more"], false);
                break;
            }
        }
    }
    let mut newest_first = names.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    for (query, param) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=x", "limit"),
        ("?after=nope", "after"),
    ] {
        let reply = t.get(&format!("/chats{query}")).await;
        reply.assert_error(400, "invalid_value");
        assert_eq!(reply.json()["error"]["param"], param);
    }
}

#[tokio::test]
async fn expired_and_vanished_chats_are_never_listed_and_leave_the_index() {
    let t = TestApp::with_env(&[("CHAT_TTL_SECONDS", "1")]).await;
    t.say("old", "hi").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    t.say("fresh", "hi").await;
    // A chat whose keys vanished without a word to the index (evicted under maxmemory).
    t.say("evicted", "hi").await;
    t.redis.query(&[
        "DEL",
        "chat-proxy:chat:{evicted}:turns",
        "chat-proxy:chat:{evicted}:meta",
    ]);
    assert_eq!(ids(&list(&t, "").await), ["fresh"]);
    assert_eq!(
        t.redis
            .query(&["ZRANGE", "chat-proxy:usage:{open}:chats", "0", "-1"]),
        "fresh",
        "the index was pruned of both"
    );
}

#[tokio::test]
async fn titles_come_from_the_first_question_until_one_is_set() {
    let t = TestApp::start().await;
    t.get("/c1/title").await.assert_error(404, "chat_not_found");
    t.post("/c1/title", json!({"title": "x"}))
        .await
        .assert_error(404, "chat_not_found");
    assert!(
        t.keys().is_empty(),
        "a title alone makes no chat: {:?}",
        t.keys()
    );
    t.say("c1", "What is the tallest mountain in Europe?").await;
    assert_eq!(
        t.get("/c1/title").await.json(),
        json!({"title": "What is the tallest mountain in Europe?"})
    );
    t.say("c1", "and in Africa?").await;
    assert_eq!(
        t.get("/c1/title").await.json()["title"],
        "What is the tallest mountain in Europe?"
    );
    let before = t.dump();
    for bad in [
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "x".repeat(201)}),
        json!({"title": "two\nlines"}),
        json!({"title": 3}),
        json!({}),
        json!({"title": "ok", "extra": 1}),
    ] {
        let reply = t.post("/c1/title", bad.clone()).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
    }
    assert_eq!(t.dump(), before, "refused titles change nothing");
    let set = t.post("/c1/title", json!({"title": "Mountains"})).await;
    assert_eq!((set.status, set.json()), (200, json!({})));
    assert_eq!(t.get("/c1/title").await.json()["title"], "Mountains");
    assert_eq!(list(&t, "").await["chats"][0]["title"], "Mountains");
    // A clear forgets the first question's title, never the one set by hand.
    t.post("/c2/chat", json!({"content": "first"})).await;
    t.post("/c2/clear", json!({})).await;
    assert_eq!(t.get("/c2/title").await.json()["title"], Value::Null);
    t.say("c2", "second").await;
    assert_eq!(t.get("/c2/title").await.json()["title"], "second");
    t.post("/c1/clear", json!({})).await;
    assert_eq!(t.get("/c1/title").await.json()["title"], "Mountains");
}

#[tokio::test]
async fn a_deleted_chat_is_gone_entirely_but_what_it_spent_stays_counted() {
    let t = TestApp::start().await;
    t.post("/keep/chat", json!({"content": "stay"})).await;
    t.post("/c1/system", json!({"content": "Be brief."})).await;
    let reply = t
        .call_with(
            Method::POST,
            "/c1/chat",
            Body::from(json!({"content": "hi"}).to_string()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(reply.status, 200);
    t.post("/c1/title", json!({"title": "Doomed"})).await;
    assert!(
        t.keys().iter().any(|k| k.contains(":idem:")),
        "an answer was kept: {:?}",
        t.keys()
    );
    let spent = t.get("/usage").await.json()["day"]["total_tokens"].clone();
    let deleted = t.call(Method::DELETE, "/c1", Body::Empty).await;
    assert_eq!((deleted.status, deleted.json()), (200, json!({})));
    let left: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.contains("{c1}"))
        .collect();
    // What stays, each for its hour: the turns' markers, the deletion's own, and the
    // chat's floor (its tombstone: no turn from a read before the deletion brings it back).
    assert!(
        left.iter()
            .all(|k| k.contains(":turn:") || k.contains(":write:") || k.ends_with(":floor")),
        "only the markers and the floor stay: {left:?}"
    );
    for key in &left {
        let ttl: i64 = t.redis.query(&["TTL", key]).parse().unwrap();
        assert!(
            (1..=3600).contains(&ttl),
            "{key} expires within the hour: {ttl}"
        );
    }
    assert_eq!(ids(&list(&t, "").await), ["keep"]);
    assert_eq!(t.transcript("c1").await, json!([]));
    assert_eq!(t.get("/c1/system").await.json()["content"], "");
    t.get("/c1/title").await.assert_error(404, "chat_not_found");
    assert_eq!(t.get("/c1/usage").await.json()["turns"], 0);
    assert_eq!(
        t.get("/usage").await.json()["day"]["total_tokens"],
        spent,
        "spent is spent"
    );
    // The key's kept answer went with the chat: the same key now asks again.
    let again = t
        .call_with(
            Method::POST,
            "/c1/chat",
            Body::from(json!({"content": "hi"}).to_string()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (200, None)
    );
    let missing = t.call(Method::DELETE, "/never", Body::Empty).await;
    assert_eq!((missing.status, missing.json()), (200, json!({})));
    assert_eq!(said(&t, "keep").await, ["stay", "reply to: stay"]);
}

#[tokio::test]
async fn regenerate_asks_the_last_question_again_and_replaces_its_answer() {
    let t = TestApp::start().await;
    t.post("/c1/regenerate", json!({}))
        .await
        .assert_error(404, "chat_not_found");
    t.say("c1", "one").await;
    t.say("c1", "two").await;
    next_answer(&t, "a better two").await;
    let reply = t.post_raw("/c1/regenerate", "").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["content"], "a better two");
    assert_eq!(
        said(&t, "c1").await,
        ["one", "reply to: one", "two", "a better two"]
    );
    // Upstream saw the history before the last turn, then its question, once.
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(spoken(&sent), ["one", "reply to: one", "two"]);
    // Streamed, as /chat streams.
    let streamed = t.post("/c1/regenerate", json!({"stream": true})).await;
    let done = streamed.events().pop().unwrap();
    assert_eq!(done.event.as_deref(), Some("done"));
    assert_eq!(
        said(&t, "c1").await,
        ["one", "reply to: one", "two", "reply to: two"]
    );
    assert_eq!(
        t.get("/c1/usage").await.json()["turns"],
        4,
        "each answer was paid for"
    );
    assert_eq!(list(&t, "").await["chats"][0]["messages"], 4);
    t.post("/c1/regenerate", json!({"content": "x"}))
        .await
        .assert_error(400, "unknown_field");
}

#[tokio::test]
async fn edit_replaces_a_question_drops_what_followed_and_asks_again() {
    let t = TestApp::start().await;
    for q in ["one", "two", "three"] {
        t.say("c1", q).await;
    }
    let before = t.dump();
    for (index, why) in [(1, "an answer"), (6, "no message 6")] {
        let reply = t
            .post("/c1/edit", json!({"index": index, "content": "x"}))
            .await;
        reply.assert_error(400, "invalid_index");
        assert!(reply.text.contains(why), "{}", reply.text);
    }
    for bad in [
        json!({"content": "x"}),
        json!({"index": -1, "content": "x"}),
        json!({"index": 0}),
    ] {
        assert_eq!(t.post("/c1/edit", bad.clone()).await.status, 400, "{bad}");
    }
    assert_eq!(t.dump(), before, "refused edits change nothing");
    let reply = t
        .post("/c1/edit", json!({"index": 2, "content": "TWO"}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        said(&t, "c1").await,
        ["one", "reply to: one", "TWO", "reply to: TWO"]
    );
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(spoken(&sent), ["one", "reply to: one", "TWO"]);
    // The first question, with an image that stays.
    t.post(
        "/pic/img",
        json!({"content": "what is this?", "url": "https://example.com/cat.png"}),
    )
    .await;
    let reply = t
        .post(
            "/pic/edit",
            json!({"index": 0, "content": "what animal is this?"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let transcript = t.transcript("pic").await;
    assert_eq!(transcript[0]["content"], "what animal is this?");
    assert_eq!(transcript[0]["url"], "https://example.com/cat.png");
    assert_eq!(transcript.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_regenerate_or_edit_changes_nothing() {
    let t = TestApp::start().await;
    t.say("c1", "one").await;
    t.say("c1", "two").await;
    let before = t.dump();
    t.openai
        .always_chat(error_response(500, "server_error", "boom"))
        .await;
    for (path, body) in [
        ("/c1/regenerate", json!({})),
        ("/c1/edit", json!({"index": 0, "content": "ONE"})),
        ("/c1/regenerate", json!({"stream": true})),
    ] {
        let reply = t.post(path, body).await;
        let failed = reply.status >= 500
            || reply
                .events()
                .last()
                .is_some_and(|e| e.event.as_deref() == Some("error"));
        assert!(failed, "{path}: {} {}", reply.status, reply.text);
    }
    assert!(t.openai.chat_bodies().await.len() > 2, "upstream was asked");
    assert_eq!(t.dump(), before);
}

#[tokio::test]
async fn a_redo_whose_write_is_cut_is_sent_again_and_replaces_once() {
    let t = TestApp::over_relay(&[]).await;
    t.say("c1", "one").await;
    t.say("c1", "two").await;
    next_answer(&t, "cut answer").await;
    // The write reaches Redis and runs; its answer is lost with the connection.
    t.relay().cut_after("cut answer");
    let reply = t.post("/c1/regenerate", json!({})).await;
    assert_eq!(t.relay().cuts(), 1, "the write's connection was cut");
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-chat-stored"), None, "stored after all");
    assert_eq!(
        said(&t, "c1").await,
        ["one", "reply to: one", "two", "cut answer"]
    );
    assert_eq!(
        t.redis
            .query(&["HGET", "chat-proxy:chat:{c1}:meta", "messages"]),
        "4"
    );
}

#[tokio::test]
async fn a_fork_copies_the_messages_up_to_a_place_and_leaves_the_source() {
    let t = TestApp::start().await;
    t.post("/src/system", json!({"content": "Be brief."})).await;
    for q in ["one", "two"] {
        t.say("src", q).await;
    }
    let before = said(&t, "src").await;
    let whole = t.post("/src/fork", json!({"into": "copy"})).await;
    assert_eq!((whole.status, whole.json()), (200, json!({"id": "copy"})));
    assert_eq!(said(&t, "copy").await, before);
    assert_eq!(t.get("/copy/system").await.json()["content"], "Be brief.");
    assert_eq!(
        t.get("/copy/usage").await.json()["turns"],
        0,
        "a fork spent nothing"
    );
    // Cut after a question: that question, unanswered; the next turn answers it.
    let cut = t
        .post_raw("/src/fork", json!({"index": 2}).to_string())
        .await;
    let id = cut.json()["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chat-"), "{id}");
    assert_eq!(said(&t, &id).await, ["one", "reply to: one", "two"]);
    t.say(&id, "again").await;
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert_eq!(
        sent["messages"][1]["content"], "Be brief.",
        "the prompt came along"
    );
    assert_eq!(spoken(&sent), ["one", "reply to: one", "two", "again"]);
    let empty = t.post_raw("/src/fork", "").await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    let taken = t.post("/src/fork", json!({"into": "copy"})).await;
    taken.assert_error(400, "chat_exists");
    t.post("/src/fork", json!({"index": 9}))
        .await
        .assert_error(400, "invalid_index");
    t.post("/src/fork", json!({"into": "a b"}))
        .await
        .assert_error(400, "invalid_chat_id");
    t.post("/none/fork", json!({}))
        .await
        .assert_error(404, "chat_not_found");
    assert_eq!(said(&t, "src").await, before, "the source is untouched");
    assert_eq!(
        said(&t, "copy").await,
        before,
        "an existing chat is not written over"
    );
}

#[tokio::test]
async fn export_and_import_round_trip_without_loss() {
    let t = TestApp::start().await;
    t.post("/c1/system", json!({"content": "Be brief."})).await;
    t.post(
        "/c1/img",
        json!({"content": "what is this?", "url": "https://example.com/cat.png"}),
    )
    .await;
    // A tool call and its result, through OpenAI's API.
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]);
    let v1 = |body: Value| t.request("/v1/chat/completions", body, &[("x-chat-id", "c1")]);
    let answer = tool_call_completion("gpt-4o-mini", &[("weather", r#"{"city":"Oslo"}"#)], 9);
    t.openai
        .fail_chat(ResponseTemplate::new(200).set_body_json(answer), 1)
        .await;
    let call = t
        .send(v1(
            json!({"messages": [{"role": "user", "content": "weather? [call]"}], "tools": tools}),
        ))
        .await;
    assert_eq!(call.status, 200, "{}", call.text);
    let call_id = call.json()["choices"][0]["message"]["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result = json!({"messages": [{"role": "tool", "tool_call_id": call_id, "content": "sunny"}], "tools": tools});
    assert_eq!(t.send(v1(result)).await.status, 200);
    // And a Responses turn in the same chat.
    let respond = t.request(
        "/v1/responses",
        json!({"input": "and tomorrow?", "conversation": "c1"}),
        &[],
    );
    assert_eq!(t.send(respond).await.status, 200);
    t.post("/c1/title", json!({"title": "Weather"})).await;
    let exported = t.get("/c1/export").await;
    assert_eq!(exported.status, 200, "{}", exported.text);
    let document = exported.json();
    assert_eq!(document["object"], "chat.export");
    assert_eq!(document["system"], "Be brief.");
    assert_eq!(document["title"], "Weather");
    assert_eq!(document["turns"].as_array().unwrap().len(), 4);
    // Each text once: the transcript is `GET /<chat_id>/chat`.
    assert!(document.get("messages").is_none(), "{document}");
    let usage = t.get("/c1/usage").await.json();
    assert_eq!(document["usage"], usage);
    assert!(usage["total_tokens"].as_u64().unwrap() > 0, "{usage}");

    let mut into = document.clone();
    into["into"] = json!("c2");
    let imported = t.post("/chats/import", into.clone()).await;
    assert_eq!(
        (imported.status, imported.json()),
        (200, json!({"id": "c2"}))
    );
    let again = t.get("/c2/export").await.json();
    for field in ["system", "title", "turns", "usage"] {
        assert_eq!(again[field], document[field], "{field}");
    }
    assert_eq!(t.transcript("c2").await, t.transcript("c1").await);
    t.post("/chats/import", into)
        .await
        .assert_error(400, "chat_exists");
    // Under its own id once the original is gone; a fresh one when it names none.
    t.call(Method::DELETE, "/c1", Body::Empty).await;
    let back = t.post("/chats/import", document.clone()).await;
    assert_eq!(back.json(), json!({"id": "c1"}));
    let mut anonymous = document.clone();
    anonymous.as_object_mut().unwrap().remove("id");
    let fresh = t.post("/chats/import", anonymous).await.json();
    assert!(
        fresh["id"].as_str().unwrap().starts_with("chat-"),
        "{fresh}"
    );
    // The imported chat goes on as any chat: upstream sees its whole history.
    t.say("c2", "thanks").await;
    let sent = t.openai.chat_bodies().await.pop().unwrap();
    assert!(sent["messages"].to_string().contains("sunny"), "{sent}");
}

#[tokio::test]
async fn an_import_from_messages_alone_and_bad_documents() {
    let t = TestApp::start().await;
    let document = json!({"id": "hand", "messages": [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "bye"}
    ]});
    assert_eq!(
        t.post("/chats/import", document).await.json(),
        json!({"id": "hand"})
    );
    assert_eq!(said(&t, "hand").await, ["hello", "hi there", "bye"]);
    assert_eq!(t.get("/hand/title").await.json()["title"], "hello");
    let before = t.dump();
    for (bad, code) in [
        (
            json!({"messages": [{"role": "assistant", "content": "no question"}]}),
            "invalid_value",
        ),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "invalid_value",
        ),
        (json!({"turns": [{"nonsense": true}]}), "invalid_value"),
        (json!({"turns": "x"}), "invalid_value"),
        // An export holds both: its `messages` must still be a transcript, not anything.
        (json!({"turns": [], "messages": {}}), "invalid_value"),
        (
            json!({"turns": [{"user": "q", "assistant": "a", "exchange": {"input": [1], "response": null}}]}),
            "invalid_value",
        ),
        (
            json!({"turns": [{"user": "q", "assistant": "a", "id": "not-the-proxys"}]}),
            "invalid_value",
        ),
        (json!({"title": "t"}), "invalid_value"),
        // An image's addresses are a list of strings, or one string.
        (
            json!({"messages": [{"role": "user", "content": "q", "urls": {"a": 1}}]}),
            "invalid_value",
        ),
        (
            json!({"messages": [{"role": "user", "content": "q", "url": 3}]}),
            "invalid_value",
        ),
        (json!({"messages": [], "surprise": 1}), "unknown_field"),
        (json!({"into": "{bad}", "messages": []}), "invalid_chat_id"),
        (
            json!({"into": "ok", "id": "0*", "messages": []}),
            "invalid_chat_id",
        ),
    ] {
        let reply = t.post("/chats/import", bad.clone()).await;
        reply.assert_error(400, code);
    }
    assert_eq!(t.dump(), before, "refused imports store nothing");
    // JSON has one kind of number: a whole one written as a float is the integer it says.
    let floats = json!({"into": "floats", "turns": [{"user": "q", "assistant": "a",
        "tokens": [12.0, 1, 30.0, 4, 0, 4.0, 0]}]});
    let imported = t.post("/chats/import", floats).await;
    assert_eq!(imported.status, 200, "{}", imported.text);
    assert_eq!(said(&t, "floats").await, ["q", "a"]);
    let small = TestApp::with_env(&[("MAX_HISTORY_MESSAGES", "2")]).await;
    let three = json!({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}
    ]});
    small
        .post("/chats/import", three)
        .await
        .assert_error(400, "chat_too_large");
}

#[tokio::test]
async fn callers_never_see_each_others_chats() {
    let t = TestApp::with_env(&[("PROXY_API_KEYS", KEYS)]).await;
    let (alice, bob) = (Some("sk-alice-1"), Some("sk-bob-2"));
    let said = call(
        &t,
        Method::POST,
        "/shared/chat",
        Some(json!({"content": "alice's secret"})),
        alice,
    )
    .await;
    assert_eq!(said.status, 200);
    let bobs = call(&t, Method::GET, "/chats", None, bob).await.json();
    assert_eq!(bobs["chats"], json!([]));
    let alices = call(&t, Method::GET, "/chats", None, alice).await.json();
    assert_eq!(ids(&alices), ["shared"]);
    call(&t, Method::GET, "/shared/export", None, bob)
        .await
        .assert_error(404, "chat_not_found");
    call(&t, Method::POST, "/shared/fork", Some(json!({})), bob)
        .await
        .assert_error(404, "chat_not_found");
    call(&t, Method::POST, "/shared/regenerate", Some(json!({})), bob)
        .await
        .assert_error(404, "chat_not_found");
    assert_eq!(
        call(&t, Method::DELETE, "/shared", None, bob).await.status,
        200
    );
    let conversations = call(&t, Method::GET, "/v1/conversations", None, bob)
        .await
        .json();
    assert_eq!(conversations["data"], json!([]));
    // Bob's delete touched his own namespace only.
    let still = call(&t, Method::GET, "/shared/chat", None, alice)
        .await
        .json();
    assert_eq!(still[0]["content"], "alice's secret");
    call(&t, Method::GET, "/chats", None, None)
        .await
        .assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn conversations_are_listed_newest_first_and_paged_by_id() {
    let t = TestApp::start().await;
    let mut made = Vec::new();
    for i in 0..3 {
        let reply = t
            .post(
                "/v1/conversations",
                json!({"metadata": {"n": i.to_string()}}),
            )
            .await;
        made.push(reply.json()["id"].as_str().unwrap().to_owned());
        tick().await;
    }
    t.say("seeded", "a chat is a conversation too").await;
    let first = t.get("/v1/conversations?limit=2").await.json();
    assert_eq!(first["object"], "list");
    let page: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["seeded", made[2].as_str()]);
    assert_eq!(first["data"][1]["metadata"], json!({"n": "2"}));
    assert_eq!(first["data"][0]["object"], "conversation");
    assert_eq!(first["has_more"], true);
    let last_id = first["last_id"].as_str().unwrap();
    let second = t
        .get(&format!("/v1/conversations?limit=2&after={last_id}"))
        .await
        .json();
    let page: Vec<&str> = second["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [made[1].as_str(), made[0].as_str()]);
    assert_eq!(second["has_more"], false);
    t.get("/v1/conversations?order=asc")
        .await
        .assert_error(400, "invalid_value");
    t.get("/v1/conversations?after=nope")
        .await
        .assert_error(404, "conversation_not_found");
    // A deleted conversation leaves the list.
    t.call(
        Method::DELETE,
        &format!("/v1/conversations/{}", made[1]),
        Body::Empty,
    )
    .await;
    let all = t.get("/v1/conversations").await.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn on_a_cluster_the_list_and_the_chats_live_in_their_own_slots() {
    let t = TestApp::over_cluster(&[]).await;
    for name in ["a", "b", "c", "d"] {
        let reply = t
            .post(&format!("/{name}/chat"), json!({"content": name}))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        tick().await;
    }
    assert_eq!(ids(&list(&t, "").await), ["d", "c", "b", "a"]);
    let forked = t.post("/a/fork", json!({"into": "e"})).await;
    assert_eq!(forked.status, 200, "{}", forked.text);
    tick().await;
    t.post("/b/regenerate", json!({})).await;
    assert_eq!(t.call(Method::DELETE, "/c", Body::Empty).await.status, 200);
    assert_eq!(ids(&list(&t, "").await), ["b", "e", "d", "a"]);
    assert_eq!(said(&t, "e").await, ["a", "reply to: a"]);
}
