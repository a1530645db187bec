//! Every route found, and every path that is not one refused with its status.

use super::*;

fn route(method: Method, path: &str) -> Result<Route, ApiError> {
    Route::parse(&method, path)
}

fn id(raw: &str) -> ChatId {
    ChatId::parse(raw).unwrap()
}

#[test]
fn every_route_is_found() {
    use Method as M;
    use SeedRoute as S;
    let cases = [
        (M::GET, "/", Route::Hello),
        (M::GET, "/system", Route::Seed(S::GetGlobalSystem)),
        (M::POST, "/system", Route::Seed(S::SetGlobalSystem)),
        (M::POST, "/mod", Route::Seed(S::Moderate)),
        (
            M::GET,
            "/c1/system",
            Route::Seed(S::GetChatSystem(id("c1"))),
        ),
        (
            M::POST,
            "/c1/system",
            Route::Seed(S::SetChatSystem(id("c1"))),
        ),
        (M::POST, "/c1/chat", Route::Seed(S::SendChat(id("c1")))),
        (M::GET, "/c1/chat", Route::Seed(S::GetChat(id("c1")))),
        (M::POST, "/c1/img", Route::Seed(S::SendImage(id("c1")))),
        (M::POST, "/c1/clear", Route::Seed(S::ClearChat(id("c1")))),
        (
            M::POST,
            "/v1/chat/completions",
            Route::OpenAi(OpenAiRoute::ChatCompletions),
        ),
        (M::GET, "/v1/models", Route::OpenAi(OpenAiRoute::Models)),
        (
            M::GET,
            "/c1/usage",
            Route::Usage(UsageRoute::Chat(id("c1"))),
        ),
        (M::GET, "/usage", Route::Usage(UsageRoute::Caller)),
        (M::GET, "/playground", Route::File(BuiltIn::PlaygroundPage)),
        (
            M::GET,
            "/playground/app.js",
            Route::File(BuiltIn::PlaygroundScript),
        ),
        (
            M::GET,
            "/playground/style.css",
            Route::File(BuiltIn::PlaygroundStyle),
        ),
        (
            M::POST,
            "/c1/regenerate",
            Route::Seed(S::Regenerate(id("c1"))),
        ),
        (M::POST, "/c1/edit", Route::Seed(S::Edit(id("c1")))),
        (M::GET, "/chats", Route::Chats(ChatsRoute::List)),
        (M::POST, "/chats/import", Route::Chats(ChatsRoute::Import)),
        (M::DELETE, "/c1", Route::Chats(ChatsRoute::Delete(id("c1")))),
        (
            M::GET,
            "/c1/title",
            Route::Chats(ChatsRoute::GetTitle(id("c1"))),
        ),
        (
            M::POST,
            "/c1/title",
            Route::Chats(ChatsRoute::SetTitle(id("c1"))),
        ),
        (
            M::POST,
            "/c1/fork",
            Route::Chats(ChatsRoute::Fork(id("c1"))),
        ),
        (
            M::GET,
            "/c1/export",
            Route::Chats(ChatsRoute::Export(id("c1"))),
        ),
        (M::GET, "/chats/chat", Route::Seed(S::GetChat(id("chats")))),
        (
            M::GET,
            "/v1/conversations",
            Route::OpenAi(OpenAiRoute::ListConversations),
        ),
        // A chat named like the page is still a chat.
        (
            M::GET,
            "/playground/chat",
            Route::Seed(S::GetChat(id("playground"))),
        ),
    ];
    for (method, path, expected) in cases {
        assert_eq!(route(method, path).unwrap(), expected, "{path}");
    }
}

#[test]
fn reserved_words_are_valid_chat_ids_in_chat_routes() {
    assert_eq!(
        route(Method::POST, "/system/chat").unwrap(),
        Route::Seed(SeedRoute::SendChat(id("system")))
    );
    assert_eq!(
        route(Method::GET, "/mod/system").unwrap(),
        Route::Seed(SeedRoute::GetChatSystem(id("mod")))
    );
}

#[test]
fn v1_chat_is_chat_v1_and_v1_chat_completions_is_openais() {
    assert_eq!(
        route(Method::POST, "/v1/chat").unwrap(),
        Route::Seed(SeedRoute::SendChat(id("v1")))
    );
    assert_eq!(
        route(Method::GET, "/v1/chat").unwrap(),
        Route::Seed(SeedRoute::GetChat(id("v1")))
    );
    assert_eq!(
        route(Method::POST, "/v1/system").unwrap(),
        Route::Seed(SeedRoute::SetChatSystem(id("v1")))
    );
    assert_eq!(
        route(Method::POST, "/v1/chat/completions").unwrap(),
        Route::OpenAi(OpenAiRoute::ChatCompletions)
    );
    for (method, path, allow) in [
        (Method::GET, "/v1/chat/completions", "POST"),
        (Method::POST, "/v1/models", "GET"),
    ] {
        match route(method, path) {
            Err(ApiError::MethodNotAllowed { allow: got }) => assert_eq!(got, allow),
            other => panic!("{path}: {other:?}"),
        }
    }
    assert!(matches!(
        route(Method::GET, "/v1/completions"),
        Err(ApiError::NotFound)
    ));
}

#[test]
fn unknown_paths_are_not_found() {
    for path in [
        "/c1/other",
        "/c1/chat/",
        "/a/b/c",
        "//",
        "/c1//chat",
        "",
        "/chats/other",
    ] {
        assert!(
            matches!(route(Method::GET, path), Err(ApiError::NotFound)),
            "{path}"
        );
    }
}

#[test]
fn wrong_methods_are_not_allowed_with_the_allowed_list() {
    let cases = [
        (Method::POST, "/", "GET"),
        (Method::DELETE, "/system", "GET, POST"),
        (Method::GET, "/mod", "POST"),
        (Method::PUT, "/c1/chat", "GET, POST"),
        (Method::GET, "/c1/img", "POST"),
        (Method::GET, "/c1/clear", "POST"),
        // A chat itself is only deleted.
        (Method::GET, "/c1", "DELETE"),
        (Method::POST, "/nope", "DELETE"),
        (Method::POST, "/chats", "GET"),
        (Method::GET, "/chats/import", "POST"),
        (Method::GET, "/c1/regenerate", "POST"),
        (Method::GET, "/c1/edit", "POST"),
        (Method::GET, "/c1/fork", "POST"),
        (Method::POST, "/c1/export", "GET"),
        (Method::DELETE, "/c1/title", "GET, POST"),
        (Method::DELETE, "/v1/conversations", "GET, POST"),
    ];
    for (method, path, expected) in cases {
        match route(method, path) {
            Err(ApiError::MethodNotAllowed { allow }) => assert_eq!(allow, expected),
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[test]
fn chat_ids_outside_the_alphabet_are_rejected() {
    let long = "a".repeat(129);
    let long_encoded = "%40".repeat(129);
    for bad in [
        "a%2Fb",
        "a%2fb",
        "a b",
        "a%20b",
        "ü",
        "caf%C3%A9",
        "{x}",
        "%7Bx%7D",
        "%FF",
        ".",
        "..",
        "%2E",
        "%2E%2E",
        ".%2E",
        long.as_str(),
        long_encoded.as_str(),
    ] {
        let path = format!("/{bad}/chat");
        let result = route(Method::POST, &path);
        assert!(
            matches!(
                result,
                Err(ApiError::BadRequest {
                    code: "invalid_chat_id",
                    ..
                })
            ),
            "{bad}: {result:?}"
        );
    }
}

#[test]
fn percent_encoded_ids_are_the_chats_they_encode() {
    assert_eq!(
        route(Method::GET, "/user%40example.com/chat").unwrap(),
        Route::Seed(SeedRoute::GetChat(id("user@example.com")))
    );
}

#[test]
fn dot_segments_are_chat_ids_that_are_refused_not_resolved() {
    for path in ["/../system", "/./chat", "/%2E%2E/system", "/../chat"] {
        let result = route(Method::POST, path);
        assert!(
            matches!(
                result,
                Err(ApiError::BadRequest {
                    code: "invalid_chat_id",
                    ..
                })
            ),
            "{path}: {result:?}"
        );
    }
}

#[test]
fn head_is_routed_as_get() {
    assert_eq!(route(Method::HEAD, "/").unwrap(), Route::Hello);
    assert_eq!(
        route(Method::HEAD, "/c1/chat").unwrap(),
        Route::Seed(SeedRoute::GetChat(id("c1")))
    );
    assert!(matches!(
        route(Method::HEAD, "/c1/clear"),
        Err(ApiError::MethodNotAllowed { allow: "POST" })
    ));
}
