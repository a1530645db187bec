//! `(method, path) -> Route`. 404 and 405 are decided here and nowhere else, and a chat id
//! is parsed into a [`ChatId`] here, so no invalid id reaches a handler or the store.
//!
//! Routing reads the path as the event carried it ([`request_path`]), never the URI that
//! lambda_http rebuilt from it: that URI went through a URL parser that removes dot segments,
//! so `/../system` would arrive as `/system`.

use lambda_http::http::Method;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::error::ApiError;

/// The path to route on: the event's raw path, without the API Gateway stage when the event
/// carries it (HTTP API events on a named stage, REST events whose path includes the stage),
/// and without any normalisation. Requests built without an event use their URI's path.
pub fn request_path(request: &Request) -> &str {
    let raw = request.raw_http_path();
    let path = if raw.is_empty() {
        request.uri().path()
    } else {
        raw
    };
    match stage_in_path(request) {
        Some(stage) => strip_stage(path, stage),
        None => path,
    }
}

/// The stage named in `path`'s first segment, when the event says it is there.
///
/// Only a request to API Gateway's own `execute-api` host names the stage in its path.
/// Behind a custom domain name the base path mapping stands in for the stage, and the path
/// never holds it, whatever its first segment says: `/prod/system` there is the prompt of
/// the chat `prod`, not the global prompt.
fn stage_in_path(request: &Request) -> Option<&str> {
    let (stage, domain, carried) = match request.request_context_ref()? {
        // An HTTP API's rawPath starts with the stage unless it is `$default`.
        RequestContext::ApiGatewayV2(context) => (
            context.stage.as_deref()?,
            context.domain_name.as_deref(),
            true,
        ),
        // A REST event's `path` usually omits the stage; API Gateway's own `requestContext.path`
        // always has it on the execute-api host, so the two are equal there exactly when
        // `path` carries it too.
        RequestContext::ApiGatewayV1(context) => (
            context.stage.as_deref()?,
            context.domain_name.as_deref(),
            context.path.as_deref() == Some(request.raw_http_path()),
        ),
        _ => return None,
    };
    let on_stage_url = domain.is_none_or(|domain| !is_custom_domain(domain));
    (carried && on_stage_url && stage != "$default" && !stage.is_empty()).then_some(stage)
}

/// Whether `domain` is a custom domain name rather than API Gateway's own `execute-api`
/// host or a local emulator's (`localhost`, an address).
fn is_custom_domain(domain: &str) -> bool {
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
        || !host.contains('.');
    !local && !host.to_ascii_lowercase().contains(".execute-api.")
}

fn strip_stage<'a>(path: &'a str, stage: &str) -> &'a str {
    match path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(stage))
    {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Every route, grouped by the front door that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: `Hello, World!`, with no key needed.
    Hello,
    /// The older Python proxy's routes, kept path for path.
    Seed(SeedRoute),
    /// OpenAI's own API (`/v1/...`).
    OpenAi(OpenAiRoute),
    /// What chats and callers have spent.
    Usage(UsageRoute),
    /// A file built into the binary, with no key needed.
    File(BuiltIn),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    /// `GET /playground`
    PlaygroundPage,
    /// `GET /playground/app.js`
    PlaygroundScript,
    /// `GET /playground/style.css`
    PlaygroundStyle,
    /// `GET /playground/icon.svg`
    PlaygroundIcon,
    /// `GET /openapi.json`
    OpenApi,
}

impl BuiltIn {
    /// The files `PLAYGROUND=false` turns off.
    pub fn is_playground(self) -> bool {
        matches!(
            self,
            BuiltIn::PlaygroundPage
                | BuiltIn::PlaygroundScript
                | BuiltIn::PlaygroundStyle
                | BuiltIn::PlaygroundIcon
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageRoute {
    /// `GET /<chat_id>/usage`
    Chat(ChatId),
    /// `GET /usage`
    Caller,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedRoute {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenAiRoute {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `GET /v1/models`
    Models,
}

impl Route {
    /// Finds the route for a request line.
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = match path.strip_prefix('/') {
            Some("") => Vec::new(),
            Some(rest) => rest.split('/').collect(),
            None => return Err(ApiError::NotFound),
        };
        // HEAD is answered as GET, without the body (`app::handle` drops it).
        let is_get = method == Method::GET || method == Method::HEAD;
        let is_post = method == Method::POST;
        let only = |allowed: bool, route: Route, allow: &'static str| {
            if allowed {
                Ok(route)
            } else {
                Err(ApiError::MethodNotAllowed { allow })
            }
        };
        match segments.as_slice() {
            [] => only(is_get, Route::Hello, "GET"),
            ["system"] if is_get => Ok(Route::Seed(SeedRoute::GetGlobalSystem)),
            ["system"] if is_post => Ok(Route::Seed(SeedRoute::SetGlobalSystem)),
            ["system"] => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
            ["mod"] => only(is_post, Route::Seed(SeedRoute::Moderate), "POST"),
            ["usage"] => only(is_get, Route::Usage(UsageRoute::Caller), "GET"),
            ["openapi.json"] => only(is_get, Route::File(BuiltIn::OpenApi), "GET"),
            ["playground"] => only(is_get, Route::File(BuiltIn::PlaygroundPage), "GET"),
            ["playground", "app.js"] => only(is_get, Route::File(BuiltIn::PlaygroundScript), "GET"),
            ["playground", "style.css"] => {
                only(is_get, Route::File(BuiltIn::PlaygroundStyle), "GET")
            }
            ["playground", "icon.svg"] => only(is_get, Route::File(BuiltIn::PlaygroundIcon), "GET"),
            [id, "usage"] => {
                let chat = ChatId::parse(id)?;
                only(is_get, Route::Usage(UsageRoute::Chat(chat)), "GET")
            }
            // Three segments, so never a chat's route: `/v1/chat` is chat `v1`'s.
            ["v1", "chat", "completions"] => {
                only(is_post, Route::OpenAi(OpenAiRoute::ChatCompletions), "POST")
            }
            ["v1", "models"] => only(is_get, Route::OpenAi(OpenAiRoute::Models), "GET"),
            [id, action @ ("system" | "chat" | "img" | "clear")] => {
                let allow = match *action {
                    "system" | "chat" => "GET, POST",
                    _ => "POST",
                };
                let route = match (*action, is_get, is_post) {
                    ("system", true, _) => SeedRoute::GetChatSystem,
                    ("system", _, true) => SeedRoute::SetChatSystem,
                    ("chat", true, _) => SeedRoute::GetChat,
                    ("chat", _, true) => SeedRoute::SendChat,
                    ("img", _, true) => SeedRoute::SendImage,
                    ("clear", _, true) => SeedRoute::ClearChat,
                    _ => return Err(ApiError::MethodNotAllowed { allow }),
                };
                Ok(Route::Seed(route(ChatId::parse(id)?)))
            }
            _ => Err(ApiError::NotFound),
        }
    }

    /// A short, stable name for logs and metrics (never the chat id).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Hello => "hello",
            Route::Seed(route) => match route {
                SeedRoute::GetGlobalSystem => "get_global_system",
                SeedRoute::SetGlobalSystem => "set_global_system",
                SeedRoute::Moderate => "moderate",
                SeedRoute::GetChatSystem(_) => "get_chat_system",
                SeedRoute::SetChatSystem(_) => "set_chat_system",
                SeedRoute::SendChat(_) => "send_chat",
                SeedRoute::GetChat(_) => "get_chat",
                SeedRoute::SendImage(_) => "send_image",
                SeedRoute::ClearChat(_) => "clear_chat",
            },
            Route::OpenAi(OpenAiRoute::ChatCompletions) => "chat_completions",
            Route::OpenAi(OpenAiRoute::Models) => "models",
            Route::Usage(UsageRoute::Chat(_)) => "chat_usage",
            Route::Usage(UsageRoute::Caller) => "caller_usage",
            Route::File(BuiltIn::PlaygroundPage) => "playground_page",
            Route::File(BuiltIn::PlaygroundScript) => "playground_script",
            Route::File(BuiltIn::PlaygroundStyle) => "playground_style",
            Route::File(BuiltIn::PlaygroundIcon) => "playground_icon",
            Route::File(BuiltIn::OpenApi) => "openapi",
        }
    }
}

/// A caller-chosen chat id: 1 to 128 characters of `A-Z a-z 0-9 . _ : @ -`, other than `.`
/// and `..`.
///
/// The alphabet leaves out `{` and `}`, so an id can always be a Redis Cluster hash tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatId(String);

impl ChatId {
    pub const MAX_LEN: usize = 128;

    /// Parses an id as it appears in a path segment: percent-decoded once (standard encoders
    /// escape `@` and `:`), then checked. An encoded `/` decodes to a character outside the
    /// alphabet and is refused like any other.
    pub fn parse(segment: &str) -> Result<ChatId, ApiError> {
        let decoded = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| Self::invalid())?;
        Self::parse_decoded(&decoded)
    }

    /// Checks an id that is not percent-encoded (a header's value, for example).
    pub fn parse_decoded(id: &str) -> Result<ChatId, ApiError> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
        // `.` and `..` are dot segments: URL parsers and proxies may resolve them away.
        let dot_segment = id == "." || id == "..";
        if id.is_empty() || id.len() > Self::MAX_LEN || !id.chars().all(allowed) || dot_segment {
            return Err(Self::invalid());
        }
        Ok(ChatId(id.to_owned()))
    }

    fn invalid() -> ApiError {
        ApiError::bad_request(
            "invalid_chat_id",
            "chat_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ - (percent-encoded or \
             not), and not . or ..",
        )
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
    fn percent_encoded_ids_are_the_ids_they_encode() {
        for (segment, id) in [
            ("user%40example.com", "user@example.com"),
            ("tenant%3Ac1", "tenant:c1"),
            ("tenant%3ac1", "tenant:c1"),
            ("%41%2D%5F", "A-_"),
            ("...", "..."),
            ("a.b", "a.b"),
        ] {
            assert_eq!(ChatId::parse(segment).unwrap().as_str(), id, "{segment}");
        }
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

    #[test]
    fn custom_domains_are_told_from_the_stage_url_and_local_hosts() {
        for custom in ["chat.example.com", "api.example.co.uk:443"] {
            assert!(is_custom_domain(custom), "{custom}");
        }
        for own in [
            "abc123.execute-api.us-east-1.amazonaws.com",
            "ABC123.EXECUTE-API.eu-west-1.amazonaws.com",
            "localhost",
            "localhost:9000",
            "127.0.0.1:3000",
            "[::1]:9000",
            "",
        ] {
            assert!(!is_custom_domain(own), "{own}");
        }
    }

    #[test]
    fn the_stage_is_stripped_only_as_a_whole_first_segment() {
        assert_eq!(strip_stage("/prod/c1/chat", "prod"), "/c1/chat");
        assert_eq!(strip_stage("/prod", "prod"), "/");
        assert_eq!(strip_stage("/prod/", "prod"), "/");
        assert_eq!(strip_stage("/production/chat", "prod"), "/production/chat");
        assert_eq!(strip_stage("/c1/chat", "prod"), "/c1/chat");
    }

    #[test]
    fn chat_ids_use_the_whole_alphabet_up_to_128_characters() {
        let longest = "z".repeat(128);
        for good in ["A-z_0.9:x@y", longest.as_str()] {
            assert_eq!(ChatId::parse(good).unwrap().as_str(), good);
        }
    }
}
