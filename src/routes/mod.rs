//! `(method, path) -> Route`. 404 and 405 are decided here and nowhere else, and a chat id
//! is parsed into a [`ChatId`] here, so no invalid id reaches a handler or the store. One
//! room: every path is matched in one `match`, whose order settles which route wins.
//!
//! Routing reads the path as the event carried it ([`request_path`]), never the URI that
//! lambda_http rebuilt from it: that URI went through a URL parser that removes dot segments,
//! so `/../system` would arrive as `/system`.

mod path;

use lambda_http::http::Method;

pub use self::path::request_path;

use crate::chat::ChatId;
use crate::error::ApiError;

/// Every route, grouped by the front door that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: `Hello, World!`, with no key needed.
    Hello,
    /// `GET /shared/<token>`: a chat's snapshot behind a read-only link, with no key needed.
    Shared(String),
    /// The older Python proxy's routes, kept path for path.
    Seed(SeedRoute),
    /// OpenAI's own API (`/v1/...`).
    OpenAi(OpenAiRoute),
    /// What chats and callers have spent.
    Usage(UsageRoute),
    /// A caller's chats: listed, titled, deleted, forked, exported and imported.
    Chats(ChatsRoute),
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
    /// `GET /playground/markdown-it.min.js`: markdown-it, vendored (`playground/vendor/`)
    PlaygroundMarkdown,
    /// `GET /playground/purify.min.js`: DOMPurify, vendored
    PlaygroundSanitizer,
    /// `GET /playground/highlight.min.js`: highlight.js, vendored
    PlaygroundHighlighter,
    /// `GET /playground/highlight-github.min.css` and `...-dark.min.css`: its light and
    /// dark themes, vendored
    PlaygroundHighlightLight,
    PlaygroundHighlightDark,
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
                | BuiltIn::PlaygroundMarkdown
                | BuiltIn::PlaygroundSanitizer
                | BuiltIn::PlaygroundHighlighter
                | BuiltIn::PlaygroundHighlightLight
                | BuiltIn::PlaygroundHighlightDark
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
pub enum ChatsRoute {
    /// `GET /chats`
    List,
    /// `POST /chats/import`
    Import,
    /// `POST /chats/temporary`: a new chat that is never listed and soon expires.
    Temporary,
    /// `DELETE /<chat_id>`
    Delete(ChatId),
    /// `GET` and `POST /<chat_id>/title`
    GetTitle(ChatId),
    SetTitle(ChatId),
    /// `POST /<chat_id>/fork`
    Fork(ChatId),
    /// `GET /<chat_id>/export`
    Export(ChatId),
    /// `POST /<chat_id>/share`: a read-only link to a snapshot of the chat.
    Share(ChatId),
    /// `GET /<chat_id>/shares`: the chat's links.
    Shares(ChatId),
    /// `DELETE /<chat_id>/shares/<id or token>`: a link revoked.
    Revoke(ChatId, String),
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
    /// `POST /<chat_id>/regenerate`: the newest turn asked again.
    Regenerate(ChatId),
    /// `POST /<chat_id>/edit`: a question edited and asked again.
    Edit(ChatId),
    /// `GET /<chat_id>/live`: the chat's streamed turn being made, whole so far or followed.
    Live(ChatId),
    /// `POST /<chat_id>/stop`: the chat's streamed turn stopped, what it wrote kept.
    Stop(ChatId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenAiRoute {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `GET /v1/models`
    Models,
    /// `GET /v1/models/{id}` (an id may hold `/`, as some upstreams' do)
    Model(String),
    /// `POST /v1/responses`
    CreateResponse,
    CompactResponse,
    CountInputTokens,
    /// `GET /v1/responses/{id}`
    GetResponse(String),
    /// `DELETE /v1/responses/{id}`
    DeleteResponse(String),
    /// `GET /v1/responses/{id}/input_items`
    ResponseInputItems(String),
    /// `POST /v1/responses/{id}/cancel`
    CancelResponse(String),
    /// `POST /v1/conversations`
    CreateConversation,
    /// `GET /v1/conversations` (beyond OpenAI's API, which lists none)
    ListConversations,
    /// `GET`, `POST` (its metadata) and `DELETE /v1/conversations/{id}`
    GetConversation(String),
    UpdateConversation(String),
    DeleteConversation(String),
    /// `GET` and `POST /v1/conversations/{id}/items`
    ConversationItems(String),
    AddConversationItems(String),
    /// `GET` and `DELETE /v1/conversations/{id}/items/{item_id}`
    ConversationItem(String, String),
    DeleteConversationItem(String, String),
}

/// A path segment, percent-decoded (an id the SDKs escape).
fn decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
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
            ["chats"] => only(is_get, Route::Chats(ChatsRoute::List), "GET"),
            ["chats", "import"] => only(is_post, Route::Chats(ChatsRoute::Import), "POST"),
            ["chats", "temporary"] => only(is_post, Route::Chats(ChatsRoute::Temporary), "POST"),
            ["openapi.json"] => only(is_get, Route::File(BuiltIn::OpenApi), "GET"),
            ["playground"] => only(is_get, Route::File(BuiltIn::PlaygroundPage), "GET"),
            ["playground", "app.js"] => only(is_get, Route::File(BuiltIn::PlaygroundScript), "GET"),
            ["playground", "style.css"] => {
                only(is_get, Route::File(BuiltIn::PlaygroundStyle), "GET")
            }
            ["playground", "icon.svg"] => only(is_get, Route::File(BuiltIn::PlaygroundIcon), "GET"),
            ["playground", "markdown-it.min.js"] => {
                only(is_get, Route::File(BuiltIn::PlaygroundMarkdown), "GET")
            }
            ["playground", "purify.min.js"] => {
                only(is_get, Route::File(BuiltIn::PlaygroundSanitizer), "GET")
            }
            ["playground", "highlight.min.js"] => {
                only(is_get, Route::File(BuiltIn::PlaygroundHighlighter), "GET")
            }
            ["playground", "highlight-github.min.css"] => only(
                is_get,
                Route::File(BuiltIn::PlaygroundHighlightLight),
                "GET",
            ),
            ["playground", "highlight-github-dark.min.css"] => {
                only(is_get, Route::File(BuiltIn::PlaygroundHighlightDark), "GET")
            }
            [id, "usage"] => {
                let chat = ChatId::parse(id)?;
                only(is_get, Route::Usage(UsageRoute::Chat(chat)), "GET")
            }
            // Three segments, so never a chat's route: `/v1/chat` is chat `v1`'s.
            ["v1", "chat", "completions"] => {
                only(is_post, Route::OpenAi(OpenAiRoute::ChatCompletions), "POST")
            }
            ["v1", "models"] => only(is_get, Route::OpenAi(OpenAiRoute::Models), "GET"),
            ["v1", "responses"] => {
                only(is_post, Route::OpenAi(OpenAiRoute::CreateResponse), "POST")
            }
            // OpenAI's paths: never a response's id (the proxy's start `resp_`).
            ["v1", "responses", "compact"] => {
                only(is_post, Route::OpenAi(OpenAiRoute::CompactResponse), "POST")
            }
            ["v1", "responses", "input_tokens"] => only(
                is_post,
                Route::OpenAi(OpenAiRoute::CountInputTokens),
                "POST",
            ),
            ["v1", "responses", id] => {
                let id = decoded(id);
                match (is_get, method == Method::DELETE) {
                    (true, _) => Ok(Route::OpenAi(OpenAiRoute::GetResponse(id))),
                    (_, true) => Ok(Route::OpenAi(OpenAiRoute::DeleteResponse(id))),
                    _ => Err(ApiError::MethodNotAllowed {
                        allow: "GET, DELETE",
                    }),
                }
            }
            ["v1", "conversations"] => match (is_get, is_post) {
                (true, _) => Ok(Route::OpenAi(OpenAiRoute::ListConversations)),
                (_, true) => Ok(Route::OpenAi(OpenAiRoute::CreateConversation)),
                _ => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
            },
            ["v1", "conversations", id] => {
                let id = decoded(id);
                let route = match (is_get, is_post, method == Method::DELETE) {
                    (true, _, _) => OpenAiRoute::GetConversation(id),
                    (_, true, _) => OpenAiRoute::UpdateConversation(id),
                    (_, _, true) => OpenAiRoute::DeleteConversation(id),
                    _ => {
                        return Err(ApiError::MethodNotAllowed {
                            allow: "GET, POST, DELETE",
                        })
                    }
                };
                Ok(Route::OpenAi(route))
            }
            ["v1", "conversations", id, "items"] => {
                let id = decoded(id);
                match (is_get, is_post) {
                    (true, _) => Ok(Route::OpenAi(OpenAiRoute::ConversationItems(id))),
                    (_, true) => Ok(Route::OpenAi(OpenAiRoute::AddConversationItems(id))),
                    _ => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
                }
            }
            ["v1", "conversations", id, "items", item] => {
                let (id, item) = (decoded(id), decoded(item));
                match (is_get, method == Method::DELETE) {
                    (true, _) => Ok(Route::OpenAi(OpenAiRoute::ConversationItem(id, item))),
                    (_, true) => Ok(Route::OpenAi(OpenAiRoute::DeleteConversationItem(id, item))),
                    _ => Err(ApiError::MethodNotAllowed {
                        allow: "GET, DELETE",
                    }),
                }
            }
            ["v1", "responses", id, "cancel"] => only(
                is_post,
                Route::OpenAi(OpenAiRoute::CancelResponse(decoded(id))),
                "POST",
            ),
            ["v1", "responses", id, "input_items"] => only(
                is_get,
                Route::OpenAi(OpenAiRoute::ResponseInputItems(decoded(id))),
                "GET",
            ),
            ["v1", "models", id @ ..] if !id.iter().any(|part| part.is_empty()) => {
                let id = id.join("/");
                only(is_get, Route::OpenAi(OpenAiRoute::Model(id)), "GET")
            }
            [id, action @ ("system" | "chat" | "img" | "clear" | "regenerate" | "edit" | "live"
            | "stop")] => {
                let allow = match *action {
                    "system" | "chat" => "GET, POST",
                    "live" => "GET",
                    _ => "POST",
                };
                let route = match (*action, is_get, is_post) {
                    ("system", true, _) => SeedRoute::GetChatSystem,
                    ("system", _, true) => SeedRoute::SetChatSystem,
                    ("chat", true, _) => SeedRoute::GetChat,
                    ("chat", _, true) => SeedRoute::SendChat,
                    ("img", _, true) => SeedRoute::SendImage,
                    ("clear", _, true) => SeedRoute::ClearChat,
                    ("regenerate", _, true) => SeedRoute::Regenerate,
                    ("edit", _, true) => SeedRoute::Edit,
                    ("live", true, _) => SeedRoute::Live,
                    ("stop", _, true) => SeedRoute::Stop,
                    _ => return Err(ApiError::MethodNotAllowed { allow }),
                };
                Ok(Route::Seed(route(ChatId::parse(id)?)))
            }
            // A token is never one of a chat's actions (`/shared/chat` is chat `shared`'s).
            ["shared", token] if is_share_token(token) => {
                only(is_get, Route::Shared((*token).to_owned()), "GET")
            }
            [id, "share"] => {
                let chat = ChatId::parse(id)?;
                only(is_post, Route::Chats(ChatsRoute::Share(chat)), "POST")
            }
            [id, "shares"] => {
                let chat = ChatId::parse(id)?;
                only(is_get, Route::Chats(ChatsRoute::Shares(chat)), "GET")
            }
            [id, "shares", token] => {
                let chat = ChatId::parse(id)?;
                let token = (*token).to_owned();
                only(
                    method == Method::DELETE,
                    Route::Chats(ChatsRoute::Revoke(chat, token)),
                    "DELETE",
                )
            }
            [id, action @ ("title" | "fork" | "export")] => {
                let chat = ChatId::parse(id)?;
                let route = match (*action, is_get, is_post) {
                    ("title", true, _) => ChatsRoute::GetTitle(chat),
                    ("title", _, true) => ChatsRoute::SetTitle(chat),
                    ("fork", _, true) => ChatsRoute::Fork(chat),
                    ("export", true, _) => ChatsRoute::Export(chat),
                    ("title", ..) => return Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
                    ("fork", ..) => return Err(ApiError::MethodNotAllowed { allow: "POST" }),
                    _ => return Err(ApiError::MethodNotAllowed { allow: "GET" }),
                };
                Ok(Route::Chats(route))
            }
            // Every other single segment is a chat, which only DELETE reaches this way.
            [id] => {
                let chat = ChatId::parse(id)?;
                only(
                    method == Method::DELETE,
                    Route::Chats(ChatsRoute::Delete(chat)),
                    "DELETE",
                )
            }
            _ => Err(ApiError::NotFound),
        }
    }

    /// A short, stable name for logs and metrics (never the chat id).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Hello => "hello",
            Route::Shared(_) => "get_shared_chat",
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
                SeedRoute::Regenerate(_) => "regenerate",
                SeedRoute::Edit(_) => "edit",
                SeedRoute::Live(_) => "live_turn",
                SeedRoute::Stop(_) => "stop_turn",
            },
            Route::Chats(route) => match route {
                ChatsRoute::List => "list_chats",
                ChatsRoute::Import => "import_chat",
                ChatsRoute::Temporary => "create_temporary_chat",
                ChatsRoute::Delete(_) => "delete_chat",
                ChatsRoute::GetTitle(_) => "get_title",
                ChatsRoute::SetTitle(_) => "set_title",
                ChatsRoute::Fork(_) => "fork_chat",
                ChatsRoute::Export(_) => "export_chat",
                ChatsRoute::Share(_) => "share_chat",
                ChatsRoute::Shares(_) => "list_chat_shares",
                ChatsRoute::Revoke(..) => "revoke_chat_share",
            },
            Route::OpenAi(OpenAiRoute::ChatCompletions) => "chat_completions",
            Route::OpenAi(OpenAiRoute::Models) => "models",
            Route::OpenAi(OpenAiRoute::Model(_)) => "model",
            Route::OpenAi(OpenAiRoute::CreateResponse) => "create_response",
            Route::OpenAi(OpenAiRoute::CompactResponse) => "compact_response",
            Route::OpenAi(OpenAiRoute::CountInputTokens) => "count_input_tokens",
            Route::OpenAi(OpenAiRoute::GetResponse(_)) => "get_response",
            Route::OpenAi(OpenAiRoute::DeleteResponse(_)) => "delete_response",
            Route::OpenAi(OpenAiRoute::ResponseInputItems(_)) => "response_input_items",
            Route::OpenAi(OpenAiRoute::CancelResponse(_)) => "cancel_response",
            Route::OpenAi(OpenAiRoute::CreateConversation) => "create_conversation",
            Route::OpenAi(OpenAiRoute::ListConversations) => "list_conversations",
            Route::OpenAi(OpenAiRoute::GetConversation(_)) => "get_conversation",
            Route::OpenAi(OpenAiRoute::UpdateConversation(_)) => "update_conversation",
            Route::OpenAi(OpenAiRoute::DeleteConversation(_)) => "delete_conversation",
            Route::OpenAi(OpenAiRoute::ConversationItems(_)) => "conversation_items",
            Route::OpenAi(OpenAiRoute::AddConversationItems(_)) => "add_conversation_items",
            Route::OpenAi(OpenAiRoute::ConversationItem(..)) => "conversation_item",
            Route::OpenAi(OpenAiRoute::DeleteConversationItem(..)) => "delete_conversation_item",
            Route::Usage(UsageRoute::Chat(_)) => "chat_usage",
            Route::Usage(UsageRoute::Caller) => "caller_usage",
            Route::File(BuiltIn::PlaygroundPage) => "playground_page",
            Route::File(BuiltIn::PlaygroundScript) => "playground_script",
            Route::File(BuiltIn::PlaygroundStyle) => "playground_style",
            Route::File(BuiltIn::PlaygroundIcon) => "playground_icon",
            Route::File(BuiltIn::PlaygroundMarkdown) => "playground_markdown",
            Route::File(BuiltIn::PlaygroundSanitizer) => "playground_sanitizer",
            Route::File(BuiltIn::PlaygroundHighlighter) => "playground_highlighter",
            Route::File(BuiltIn::PlaygroundHighlightLight) => "playground_highlight_light",
            Route::File(BuiltIn::PlaygroundHighlightDark) => "playground_highlight_dark",
            Route::File(BuiltIn::OpenApi) => "openapi",
        }
    }
}

#[cfg(test)]
mod tests;

/// What a read-only link's token looks like: 43 characters of unpadded base64url (256
/// random bits), so that no action of a chat named `shared` is ever taken for one.
pub fn is_share_token(token: &str) -> bool {
    token.len() == SHARE_TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The length of a link's token.
pub const SHARE_TOKEN_CHARS: usize = 43;
