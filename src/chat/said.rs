//! A chat's history as a caller resends it: frameworks that keep their own memory send the
//! whole conversation each call, and the part the chat already holds must be told apart from
//! what is new.

use serde_json::Value;

use super::{text_of, Asked, Turn, UserContent};

/// One message of a resent history.
#[derive(Debug, Clone, PartialEq)]
pub enum Said {
    Asked(Asked),
    /// An assistant message: its text (empty when it has none) and its tool calls.
    Reply {
        text: String,
        calls: Vec<Value>,
    },
}

/// Where `resent` stops matching the chat's stored messages, aligned at their ends (the
/// newest stored message against the last resent one): the index in `resent` of the first
/// message that differs, or `None` when they agree wherever both have a message. A history
/// longer than the chat's (whose oldest turns the caps dropped) or shorter (a caller that
/// resends only its newest messages) agrees as long as the messages both hold are the same.
pub fn first_difference(stored: &[Turn], resent: &[Said]) -> Option<usize> {
    let total: usize = stored.iter().map(Turn::messages).sum();
    let overlap = total.min(resent.len());
    let skip = total - overlap;
    let mut stored_messages = stored
        .iter()
        .flat_map(|turn| {
            turn.asked
                .iter()
                .map(StoredRef::Asked)
                .chain(turn.has_reply().then_some(StoredRef::Reply(turn)))
        })
        .skip(skip);
    let from = resent.len() - overlap;
    for (index, said) in resent.iter().enumerate().skip(from) {
        let kept = stored_messages.next()?;
        if !kept.is(said) {
            return Some(index);
        }
    }
    None
}

enum StoredRef<'a> {
    Asked(&'a Asked),
    Reply(&'a Turn),
}

impl StoredRef<'_> {
    /// The same role and content: the same text and images, the same tool results, the same
    /// tool calls (by id, name and arguments).
    fn is(&self, said: &Said) -> bool {
        match (self, said) {
            (StoredRef::Asked(Asked::User(kept)), Said::Asked(Asked::User(sent))) => {
                same_user(kept, sent)
            }
            (StoredRef::Asked(Asked::ToolResult(kept)), Said::Asked(Asked::ToolResult(sent))) => {
                kept.tool_call_id == sent.tool_call_id
                    && text_of(&kept.content) == text_of(&sent.content)
            }
            (StoredRef::Reply(turn), Said::Reply { text, calls }) => {
                turn.assistant == *text
                    && turn.calls.len() == calls.len()
                    && turn.calls.iter().zip(calls).all(|(a, b)| same_call(a, b))
            }
            _ => false,
        }
    }
}

fn same_user(kept: &UserContent, sent: &UserContent) -> bool {
    kept.text() == sent.text() && kept.image_urls().eq(sent.image_urls())
}

fn same_call(kept: &Value, sent: &Value) -> bool {
    kept["id"] == sent["id"]
        && kept["function"]["name"] == sent["function"]["name"]
        && same_arguments(
            &kept["function"]["arguments"],
            &sent["function"]["arguments"],
        )
}

/// The same arguments: as JSON values when both parse (frameworks that parse a call's
/// arguments write them back with their own spacing and key order), else as text.
fn same_arguments(kept: &Value, sent: &Value) -> bool {
    let parsed = |arguments: &Value| {
        arguments
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
    };
    match (parsed(kept), parsed(sent)) {
        (Some(kept), Some(sent)) => kept == sent,
        _ => kept == sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(text: &str) -> Said {
        Said::Asked(Asked::User(UserContent::Text(text.into())))
    }

    fn reply(text: &str) -> Said {
        Said::Reply {
            text: text.into(),
            calls: Vec::new(),
        }
    }

    fn chat() -> Vec<Turn> {
        vec![
            Turn::question(None, "one".into(), None, "1".into()),
            Turn::question(None, "two".into(), None, "2".into()),
        ]
    }

    #[test]
    fn a_whole_or_partial_resend_agrees_and_a_changed_one_does_not() {
        let whole = [user("one"), reply("1"), user("two"), reply("2")];
        assert_eq!(first_difference(&chat(), &whole), None);
        assert_eq!(first_difference(&chat(), &whole[2..]), None);
        let longer = [
            user("zero"),
            reply("0"),
            user("one"),
            reply("1"),
            user("two"),
            reply("2"),
        ];
        assert_eq!(first_difference(&chat(), &longer), None);
        assert_eq!(first_difference(&[], &whole), None);
        let changed = [user("one"), reply("one!"), user("two"), reply("2")];
        assert_eq!(first_difference(&chat(), &changed), Some(1));
        let shifted = [user("two"), reply("2"), user("three"), reply("3")];
        assert_eq!(first_difference(&chat(), &shifted), Some(0));
    }

    #[test]
    fn tool_calls_are_compared_by_id_name_and_arguments() {
        let call =
            json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let stored = vec![Turn {
            calls: vec![call.clone()],
            ..Turn::question(None, "q".into(), None, String::new())
        }];
        let same = [
            user("q"),
            Said::Reply {
                text: String::new(),
                calls: vec![json!({"id": "c1", "function": {"name": "f", "arguments": "{ }"}})],
            },
        ];
        assert_eq!(first_difference(&stored, &same), None);
        let other = [
            user("q"),
            Said::Reply {
                text: String::new(),
                calls: vec![json!({"id": "c2", "function": {"name": "f", "arguments": "{}"}})],
            },
        ];
        assert_eq!(first_difference(&stored, &other), Some(1));
    }
}
