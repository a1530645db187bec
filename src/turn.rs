//! The turn engine: read the chat, build the messages, ask upstream, store the turn.
//!
//! Every front door that makes a turn goes through here, and none of them talks to the store
//! or upstream about a turn by itself. A turn costs two Redis round trips: one read (the
//! prompts, the history and, alongside, the caller's rate limit) and one atomic write of the
//! question with its answer, made only once upstream has answered.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::routes::ChatId;
use crate::store::{Store, Turn, TurnContext, UserContent};
use crate::upstream::wire::{Message, Usage};
use crate::upstream::{Model, Upstream, UpstreamError};

/// What a front door asks of the engine.
pub struct Ask<'a> {
    pub tenant: &'a Tenant,
    pub chat: &'a ChatId,
    /// The caller's new messages, in order; at least one.
    pub asked: Vec<UserContent>,
    pub model: Model,
    /// When upstream must have answered.
    pub deadline: Instant,
}

/// A turn upstream answered.
#[derive(Debug)]
pub struct Answered {
    pub reply: String,
    pub usage: Usage,
    /// False when the answer could not be stored: the caller still gets what it paid for.
    pub stored: bool,
}

/// The store and upstream a turn needs, built once per cold start.
pub struct TurnEngine {
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    default_system_prompt: String,
}

/// How a turn sends the images of its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HistoryImages {
    AsImages,
    /// As `[image: <url>]` text, after upstream refused an image of the history.
    AsText,
}

impl TurnEngine {
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Arc<Upstream>,
        default_system_prompt: String,
    ) -> Self {
        TurnEngine {
            store,
            upstream,
            default_system_prompt,
        }
    }

    /// Runs one turn. `rate_limit` is awaited in the same round trip as the chat's read;
    /// nothing is sent upstream unless both succeed, and nothing is stored unless upstream
    /// answered.
    pub async fn run(
        &self,
        ask: Ask<'_>,
        rate_limit: impl Future<Output = Result<(), ApiError>>,
        log: &mut RequestLog,
    ) -> Result<Answered, ApiError> {
        let read =
            async { tokio::join!(rate_limit, self.store.turn_context(ask.tenant, ask.chat)) };
        let (allowed, context) = log.redis(read).await;
        allowed?;
        let context = context?;

        let mut images = HistoryImages::AsImages;
        let completion = loop {
            let messages = self.messages(&context, &ask.asked, images);
            let call = self.upstream.complete(ask.model, &messages, ask.deadline);
            match log.upstream(call).await {
                Ok(completion) => break completion,
                Err(error)
                    if images == HistoryImages::AsImages
                        && blames_history_images(&error, &context, &ask.asked) =>
                {
                    tracing::warn!(
                        error = %error,
                        "upstream refused an image of the chat's history; sending its images as text"
                    );
                    images = HistoryImages::AsText;
                }
                Err(error) => return Err(error.into()),
            }
        };
        log.tokens = Some(completion.usage);

        let turn = Turn {
            id: Some(Turn::new_id()),
            asked: ask.asked,
            assistant: completion.content,
        };
        let stored = match log
            .redis(self.store.append_turn(ask.tenant, ask.chat, &turn))
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(
                    error = %error,
                    "the answer was paid for but could not be stored; answering it unstored"
                );
                false
            }
        };
        Ok(Answered {
            reply: turn.assistant,
            usage: completion.usage,
            stored,
        })
    }

    /// The global prompt, the chat's prompt, the history, then the new messages.
    fn messages<'a>(
        &'a self,
        context: &'a TurnContext,
        asked: &'a [UserContent],
        images: HistoryImages,
    ) -> Vec<Message<'a>> {
        let global_prompt = context
            .global_prompt
            .as_deref()
            .unwrap_or(&self.default_system_prompt);
        let past = context
            .history
            .iter()
            .map(|t| t.asked.len() + 1)
            .sum::<usize>();
        let mut messages = Vec::with_capacity(2 + past + asked.len());
        messages.push(Message::System {
            content: global_prompt,
        });
        if let Some(prompt) = context.chat_prompt.as_deref() {
            messages.push(Message::System { content: prompt });
        }
        for turn in &context.history {
            for content in &turn.asked {
                messages.push(match images {
                    HistoryImages::AsImages => Message::user(content),
                    HistoryImages::AsText => Message::user_images_as_text(content),
                });
            }
            messages.push(Message::Assistant {
                content: &turn.assistant,
            });
        }
        messages.extend(asked.iter().map(Message::user));
        messages
    }
}

/// Whether upstream's refusal is about an image of the history rather than the new
/// messages: a chat whose old image link expired, or whose CHAT_MODEL cannot see images,
/// must not be refused forever.
fn blames_history_images(
    error: &UpstreamError,
    context: &TurnContext,
    asked: &[UserContent],
) -> bool {
    let UpstreamError::Rejected {
        message,
        code,
        param,
    } = error
    else {
        return false;
    };
    let history_urls: Vec<&str> = context
        .history
        .iter()
        .flat_map(|turn| &turn.asked)
        .flat_map(UserContent::image_urls)
        .collect();
    if history_urls.is_empty() {
        return false;
    }
    if asked
        .iter()
        .flat_map(UserContent::image_urls)
        .any(|url| message.contains(url))
    {
        return false;
    }
    // OpenAI names the message it refused as `messages.[i]...` when it can.
    if let Some(index) = param.as_deref().and_then(message_index) {
        let first_new = 1
            + usize::from(context.chat_prompt.is_some())
            + context
                .history
                .iter()
                .map(|t| t.asked.len() + 1)
                .sum::<usize>();
        return index < first_new;
    }
    let about_images = |text: &str| text.to_ascii_lowercase().contains("image");
    about_images(message)
        || code.as_deref().is_some_and(about_images)
        || history_urls.iter().any(|url| message.contains(url))
}

/// `3` from `messages.[3].content.[1].image_url` (or `messages[3]...`).
fn message_index(param: &str) -> Option<usize> {
    let rest = param.strip_prefix("messages")?;
    let rest = rest.strip_prefix('.').unwrap_or(rest).strip_prefix('[')?;
    rest.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context_with_image() -> TurnContext {
        TurnContext {
            global_prompt: None,
            chat_prompt: Some("p".into()),
            history: vec![Turn::question(
                None,
                "what?".into(),
                Some("https://x/old.png".into()),
                "a cat".into(),
            )],
        }
    }

    fn rejected(message: &str, code: Option<&str>, param: Option<&str>) -> UpstreamError {
        UpstreamError::Rejected {
            message: message.into(),
            code: code.map(Into::into),
            param: param.map(Into::into),
        }
    }

    #[test]
    fn message_indexes_are_read_from_params() {
        assert_eq!(message_index("messages.[3].content.[1].image_url"), Some(3));
        assert_eq!(message_index("messages[12].content"), Some(12));
        assert_eq!(message_index("model"), None);
        assert_eq!(message_index("messages"), None);
    }

    #[test]
    fn a_refused_history_image_is_recognised() {
        let context = context_with_image();
        let new = [UserContent::Text("and now?".into())];
        for error in [
            rejected("Timeout while downloading https://x/old.png.", None, None),
            rejected("Invalid image.", Some("invalid_image_url"), None),
            rejected(
                "Invalid content type. image_url is only supported by certain models.",
                None,
                Some("messages.[2].content.[1].type"),
            ),
        ] {
            assert!(blames_history_images(&error, &context, &new), "{error}");
        }
    }

    #[test]
    fn other_refusals_are_not_blamed_on_the_history() {
        let context = context_with_image();
        let own = [UserContent::question(
            "and this?".into(),
            Some("https://x/new.png".into()),
        )];
        let cases = [
            // The new message's own image.
            rejected("Timeout while downloading https://x/new.png.", None, None),
            // Pointed at the new message (index 4: global, chat prompt, 2 of history).
            rejected("Invalid image.", None, Some("messages.[4].content.[1]")),
            // Not about images at all.
            rejected("max_tokens is too large", None, Some("max_tokens")),
        ];
        for error in cases {
            assert!(!blames_history_images(&error, &context, &own), "{error}");
        }
        let no_images = TurnContext::default();
        let error = rejected("Invalid image.", Some("invalid_image_url"), None);
        assert!(!blames_history_images(&error, &no_images, &own));
        assert!(!blames_history_images(
            &UpstreamError::Timeout,
            &context,
            &own
        ));
    }
}
