//! A turn asked again: the chat's newest (`/regenerate`), or one of its questions edited
//! (`/edit`). Found in the chat the turn reads, so that it costs no round trip of its own,
//! and replaced in the turn's one write, so that a failed redo changes nothing.

use crate::chat::{places, Asked, Part, Place, Turn, UserContent};
use crate::error::ApiError;
use crate::store::TurnContext;

/// What is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redo {
    /// The newest turn's question, with the history before it.
    Last,
    /// The user message at `index` of the chat's transcript (`GET /<chat_id>/chat`) with
    /// `content` for its text (its images stay), and the history before it.
    Edit { index: usize, content: String },
}

/// What a redo asks: the messages to send as new, and the stored turn they replace (with
/// every turn after it). The history is cut to the turns before it.
pub(super) fn resolve(
    redo: Redo,
    context: &mut TurnContext,
) -> Result<(Vec<Asked>, String), ApiError> {
    let (at, asked) = match redo {
        Redo::Last => match context.history.last() {
            Some(turn) => (context.history.len() - 1, turn.asked.clone()),
            None => {
                return Err(ApiError::Missing {
                    code: "chat_not_found",
                    param: None,
                    message: "the chat has no turn to regenerate".to_owned(),
                })
            }
        },
        Redo::Edit { index, content } => {
            let (at, question) = find_question(&context.history, index)?;
            let mut asked = context.history[at].asked[..question].to_vec();
            let images = context.history[at].asked[question]
                .user()
                .map(image_parts)
                .unwrap_or_default();
            asked.push(Asked::User(if images.is_empty() {
                UserContent::Text(content)
            } else {
                let mut parts = vec![Part::Text { text: content }];
                parts.extend(images);
                UserContent::Parts(parts)
            }));
            (at, asked)
        }
    };
    let Some(id) = context.history[at].id.clone() else {
        return Err(invalid_index(
            "this message was stored by an older version of the proxy and cannot be asked again",
        ));
    };
    context.history.truncate(at);
    Ok((asked, id))
}

/// The turn holding the user message at transcript position `index`, and the message's
/// place among the turn's questions.
fn find_question(history: &[Turn], index: usize) -> Result<(usize, usize), ApiError> {
    match places(history).nth(index) {
        Some((at, Place::Asked(question))) => match &history[at].asked[question] {
            Asked::User(_) => Ok((at, question)),
            Asked::ToolResult(_) => Err(invalid_index(&format!(
                "message {index} is a tool's result, not a user message"
            ))),
        },
        Some((_, Place::Reply)) => Err(invalid_index(&format!(
            "message {index} is an answer, not a user message"
        ))),
        None => Err(invalid_index(&format!(
            "the chat has {} messages; there is no message {index}",
            places(history).count()
        ))),
    }
}

fn image_parts(user: &UserContent) -> Vec<Part> {
    match user {
        UserContent::Text(_) => Vec::new(),
        UserContent::Parts(parts) => parts
            .iter()
            .filter(|part| matches!(part, Part::ImageUrl { .. }))
            .cloned()
            .collect(),
    }
}

fn invalid_index(message: &str) -> ApiError {
    ApiError::BadParam {
        code: "invalid_index",
        param: "index",
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> TurnContext {
        let turn = |id: &str, q: &str, a: &str| {
            Turn::question(Some(id.to_owned()), q.to_owned(), None, a.to_owned())
        };
        TurnContext {
            history: vec![turn("t1", "one", "1"), turn("t2", "two", "2")],
            ..TurnContext::default()
        }
    }

    #[test]
    fn the_last_turn_is_asked_again_with_the_history_before_it() {
        let mut context = chat();
        let (asked, replaces) = resolve(Redo::Last, &mut context).unwrap();
        assert_eq!(asked, vec![Asked::User(UserContent::Text("two".into()))]);
        assert_eq!(replaces, "t2");
        assert_eq!(context.history.len(), 1);
    }

    #[test]
    fn an_edit_names_a_user_message_by_its_place_in_the_transcript() {
        let mut context = chat();
        let edit = Redo::Edit {
            index: 2,
            content: "TWO".into(),
        };
        let (asked, replaces) = resolve(edit, &mut context).unwrap();
        assert_eq!(asked, vec![Asked::User(UserContent::Text("TWO".into()))]);
        assert_eq!((replaces.as_str(), context.history.len()), ("t2", 1));
        for (index, word) in [(1, "an answer"), (4, "there is no message 4")] {
            let edit = Redo::Edit {
                index,
                content: "x".into(),
            };
            let error = resolve(edit, &mut chat()).unwrap_err();
            assert!(error.to_string().contains(word), "{error}");
            assert_eq!(error.code(), "invalid_index");
        }
        let error = resolve(Redo::Last, &mut TurnContext::default()).unwrap_err();
        assert_eq!(error.code(), "chat_not_found");
    }
}
