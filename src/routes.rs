//! `(method, path) -> Route`. 404 and 405 are decided here and nowhere else, and a chat id
//! is parsed into a [`ChatId`] here, so no invalid id reaches a handler or the store.

use lambda_http::http::Method;

use crate::error::ApiError;

/// Every route of the HTTP API (the older Python proxy's, kept path for path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Hello,
    GetGlobalSystem,
    SetGlobalSystem,
    Moderate,
    GetChatSystem(ChatId),
    SetChatSystem(ChatId),
    SendChat(ChatId),
    GetChat(ChatId),
    SendImage(ChatId),
    ClearChat(ChatId),
}

impl Route {
    /// Finds the route for a request line.
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = match path.strip_prefix('/') {
            Some("") => Vec::new(),
            Some(rest) => rest.split('/').collect(),
            None => return Err(ApiError::NotFound),
        };
        let is_get = method == Method::GET;
        let is_post = method == Method::POST;
        match segments.as_slice() {
            [] if is_get => Ok(Route::Hello),
            [] => Err(ApiError::MethodNotAllowed { allow: "GET" }),
            ["system"] if is_get => Ok(Route::GetGlobalSystem),
            ["system"] if is_post => Ok(Route::SetGlobalSystem),
            ["system"] => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
            ["mod"] if is_post => Ok(Route::Moderate),
            ["mod"] => Err(ApiError::MethodNotAllowed { allow: "POST" }),
            [id, action @ ("system" | "chat" | "img" | "clear")] => {
                let allow = match *action {
                    "system" | "chat" => "GET, POST",
                    _ => "POST",
                };
                let route = match (*action, is_get, is_post) {
                    ("system", true, _) => Route::GetChatSystem,
                    ("system", _, true) => Route::SetChatSystem,
                    ("chat", true, _) => Route::GetChat,
                    ("chat", _, true) => Route::SendChat,
                    ("img", _, true) => Route::SendImage,
                    ("clear", _, true) => Route::ClearChat,
                    _ => return Err(ApiError::MethodNotAllowed { allow }),
                };
                Ok(route(ChatId::parse(id)?))
            }
            _ => Err(ApiError::NotFound),
        }
    }

    /// A short, stable name for logs and metrics (never the chat id).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Hello => "hello",
            Route::GetGlobalSystem => "get_global_system",
            Route::SetGlobalSystem => "set_global_system",
            Route::Moderate => "moderate",
            Route::GetChatSystem(_) => "get_chat_system",
            Route::SetChatSystem(_) => "set_chat_system",
            Route::SendChat(_) => "send_chat",
            Route::GetChat(_) => "get_chat",
            Route::SendImage(_) => "send_image",
            Route::ClearChat(_) => "clear_chat",
        }
    }
}

/// A caller-chosen chat id: 1 to 128 characters of `A-Z a-z 0-9 . _ : @ -`.
///
/// The alphabet leaves out `{` and `}`, so an id can always be a Redis Cluster hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatId(String);

impl ChatId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<ChatId, ApiError> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.chars().all(allowed) {
            return Err(ApiError::bad_request(
                "invalid_chat_id",
                "chat_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -",
            ));
        }
        Ok(ChatId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
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
        let cases = [
            (M::GET, "/", Route::Hello),
            (M::GET, "/system", Route::GetGlobalSystem),
            (M::POST, "/system", Route::SetGlobalSystem),
            (M::POST, "/mod", Route::Moderate),
            (M::GET, "/c1/system", Route::GetChatSystem(id("c1"))),
            (M::POST, "/c1/system", Route::SetChatSystem(id("c1"))),
            (M::POST, "/c1/chat", Route::SendChat(id("c1"))),
            (M::GET, "/c1/chat", Route::GetChat(id("c1"))),
            (M::POST, "/c1/img", Route::SendImage(id("c1"))),
            (M::POST, "/c1/clear", Route::ClearChat(id("c1"))),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path).unwrap(), expected, "{path}");
        }
    }

    #[test]
    fn reserved_words_are_valid_chat_ids_in_chat_routes() {
        assert_eq!(
            route(Method::POST, "/system/chat").unwrap(),
            Route::SendChat(id("system"))
        );
        assert_eq!(
            route(Method::GET, "/mod/system").unwrap(),
            Route::GetChatSystem(id("mod"))
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/nope",
            "/c1/other",
            "/c1/chat/",
            "/a/b/c",
            "//",
            "/c1//chat",
            "",
            "/c1",
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
        for bad in ["a%2Fb", "a b", "ü", "{x}", long.as_str()] {
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
    fn chat_ids_use_the_whole_alphabet_up_to_128_characters() {
        let longest = "z".repeat(128);
        for good in ["A-z_0.9:x@y", longest.as_str()] {
            assert_eq!(ChatId::parse(good).unwrap().as_str(), good);
        }
    }
}
