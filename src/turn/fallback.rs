//! One more try when upstream refuses a turn for what the history holds: an image of the
//! history it cannot fetch or see is sent once more as `[image: <url>]` text; a request too
//! long for its context, once more with half the history.

use std::future::Future;

use super::prepare::Ready;
use super::sent::{HistoryImages, Sent};
use super::{Ask, TurnEngine};
use crate::budget::{self, Window};
use crate::chat::Asked;
use crate::error::ApiError;
use crate::request_log::RequestLog;
use crate::store::TurnContext;
use crate::upstream::UpstreamError;

impl TurnEngine {
    /// Calls upstream with the turn's messages. When upstream refuses an image of the
    /// history, calls once more with the history's images as text; when it refuses the
    /// request as too long for its context, once more with half the history.
    pub(super) async fn ask_upstream<'c, T, F, Fut>(
        &'c self,
        ready: &'c mut Ready,
        ask: &'c Ask<'_>,
        log: &mut RequestLog,
        call: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Sent<'c>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut images = HistoryImages::AsImages;
        let mut halved = false;
        loop {
            let sent = self.sent(&ready.context, &ready.window, ask, images);
            let error = match log.upstream(call(sent)).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if images == HistoryImages::AsImages
                && blames_history_images(&error, &ready.context, &ready.window, &ask.asked)
            {
                tracing::warn!(
                    error = %error,
                    "upstream refused an image of the chat's history; sending its images as text"
                );
                images = HistoryImages::AsText;
            } else if !halved
                && is_context_length(&error)
                && ready.window.start < ready.context.history.len()
            {
                tracing::warn!(
                    error = %error,
                    "upstream found the request too long for its context; sending half the history"
                );
                ready.window = budget::halve(&ready.context, &ready.window, &ready.turn_id);
                // The chat's compaction stood for the turns before the window it was made
                // for; the halved window starts later and goes without it (`sent.rs`).
                halved = true;
            } else {
                return Err(error.into());
            }
        }
    }
}

/// Whether upstream refused the request as longer than the model's context.
fn is_context_length(error: &UpstreamError) -> bool {
    matches!(error, UpstreamError::Refused { status: 400, code: Some(code), .. } if code == "context_length_exceeded")
}

/// Whether upstream's refusal is about an image of the history rather than the new
/// messages: a chat whose old image link expired, or whose CHAT_MODEL cannot see images,
/// must not be refused forever.
fn blames_history_images(
    error: &UpstreamError,
    context: &TurnContext,
    window: &Window,
    asked: &[Asked],
) -> bool {
    let UpstreamError::Refused {
        status: 400,
        message,
        code,
        param,
    } = error
    else {
        return false;
    };
    let sent = &context.history[window.start.min(context.history.len())..];
    let history_urls: Vec<&str> = sent
        .iter()
        .flat_map(|turn| &turn.asked)
        .flat_map(Asked::image_urls)
        .collect();
    if history_urls.is_empty() {
        return false;
    }
    if asked
        .iter()
        .flat_map(Asked::image_urls)
        .any(|url| message.contains(url))
    {
        return false;
    }
    // OpenAI names the message it refused as `messages.[i]...` when it can.
    if let Some(index) = param.as_deref().and_then(message_index) {
        let first_new = 1
            + usize::from(context.chat_prompt.is_some())
            + sent.iter().map(|t| t.asked.len() + 1).sum::<usize>();
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
    use crate::chat::{Turn, UserContent};

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
            ..TurnContext::default()
        }
    }

    fn whole() -> Window {
        Window {
            start: 0,
            moved_to: None,
            moved_from: 0,
            tokens: 0,
        }
    }

    fn rejected(message: &str, code: Option<&str>, param: Option<&str>) -> UpstreamError {
        UpstreamError::Refused {
            status: 400,
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
        let new = [Asked::User(UserContent::Text("and now?".into()))];
        for error in [
            rejected("Timeout while downloading https://x/old.png.", None, None),
            rejected("Invalid image.", Some("invalid_image_url"), None),
            rejected(
                "Invalid content type. image_url is only supported by certain models.",
                None,
                Some("messages.[2].content.[1].type"),
            ),
        ] {
            assert!(
                blames_history_images(&error, &context, &whole(), &new),
                "{error}"
            );
        }
    }

    #[test]
    fn other_refusals_are_not_blamed_on_the_history() {
        let context = context_with_image();
        let own = [Asked::User(UserContent::question(
            "and this?".into(),
            Some("https://x/new.png".into()),
        ))];
        let cases = [
            // The new message's own image.
            rejected("Timeout while downloading https://x/new.png.", None, None),
            // Pointed at the new message (index 4: global, chat prompt, 2 of history).
            rejected("Invalid image.", None, Some("messages.[4].content.[1]")),
            // Not about images at all.
            rejected("max_tokens is too large", None, Some("max_tokens")),
        ];
        for error in cases {
            assert!(
                !blames_history_images(&error, &context, &whole(), &own),
                "{error}"
            );
        }
        let no_images = TurnContext::default();
        let error = rejected("Invalid image.", Some("invalid_image_url"), None);
        assert!(!blames_history_images(&error, &no_images, &whole(), &own));
        // An image outside the window sent is not to blame either.
        let past_window = Window {
            start: 1,
            moved_to: None,
            moved_from: 1,
            tokens: 0,
        };
        assert!(!blames_history_images(&error, &context, &past_window, &own));
        assert!(!blames_history_images(
            &UpstreamError::Timeout,
            &context,
            &whole(),
            &own
        ));
    }

    #[test]
    fn only_a_context_length_refusal_halves_the_history() {
        assert!(is_context_length(&rejected(
            "This model's maximum context length is 128000 tokens.",
            Some("context_length_exceeded"),
            Some("messages")
        )));
        assert!(!is_context_length(&rejected(
            "bad",
            Some("invalid_value"),
            None
        )));
        assert!(!is_context_length(&UpstreamError::Timeout));
    }
}
