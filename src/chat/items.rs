//! What an input item may be, as OpenAI's Responses API takes it: a message of a known role
//! whose content is text or parts of known kinds, a function call or its output, reasoning,
//! a reference, or another item type OpenAI defines. Checked before an item is sent or
//! stored, wherever it comes in (`POST /v1/responses`'s `input`, a conversation's `items`),
//! so that an item upstream would refuse is never kept in a chat, where it would make every
//! later turn fail.

use serde_json::Value;

/// The roles a message item may have.
const ROLES: [&str; 4] = ["user", "assistant", "system", "developer"];

/// The kinds of a message's content parts.
const PARTS: [&str; 6] = [
    "input_text",
    "input_image",
    "input_file",
    "input_audio",
    "output_text",
    "refusal",
];

/// The item types OpenAI's Responses API takes besides messages, function calls and their
/// outputs, reasoning and references, whose fields upstream checks.
const OTHER_TYPES: [&str; 19] = [
    "compaction",
    "file_search_call",
    "web_search_call",
    "computer_call",
    "computer_call_output",
    "image_generation_call",
    "code_interpreter_call",
    "local_shell_call",
    "local_shell_call_output",
    "shell_call",
    "shell_call_output",
    "apply_patch_call",
    "apply_patch_call_output",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_approval_response",
    "mcp_call",
    "custom_tool_call",
    "custom_tool_call_output",
];

/// Checks every item; `Err((index, why))` names the first that is not an item, `why`
/// saying what is wrong with it (to follow `input[index] ` or `items[index] `).
pub fn check_items(items: &[Value]) -> Result<(), (usize, String)> {
    for (index, item) in items.iter().enumerate() {
        check_item(item).map_err(|why| (index, why))?;
    }
    Ok(())
}

/// Whether every function call output among `items` answers a call made before it: a
/// `function_call` earlier among them, or one of `calls` (the chat's newest turn's). `Ok`
/// says whether any answers one of `calls`; `Err((index, call id))` names the first that
/// answers none (OpenAI refuses such an output, in this turn and in every later one).
pub fn unanswered_output(items: &[Value], calls: &[&str]) -> Result<bool, (usize, String)> {
    let mut made: Vec<&str> = Vec::new();
    let mut answers_calls = false;
    for (index, item) in items.iter().enumerate() {
        let call = item["call_id"].as_str().unwrap_or_default();
        match item["type"].as_str() {
            Some("function_call") => made.push(call),
            Some("function_call_output") if made.contains(&call) => {}
            Some("function_call_output") if calls.contains(&call) => answers_calls = true,
            Some("function_call_output") => return Err((index, call.to_owned())),
            _ => {}
        }
    }
    Ok(answers_calls)
}

fn check_item(item: &Value) -> Result<(), String> {
    let Value::Object(fields) = item else {
        return Err("must be an item: an object with a `type` or a `role`".to_owned());
    };
    let text = |name: &str| fields.get(name).is_some_and(Value::is_string);
    match fields.get("type") {
        None | Some(Value::Null) if fields.contains_key("role") => check_message(item),
        Some(Value::String(kind)) => match kind.as_str() {
            "message" => check_message(item),
            "function_call" if text("call_id") && text("name") && text("arguments") => Ok(()),
            "function_call" => {
                Err("is a function_call without a string `call_id`, `name` and `arguments`".into())
            }
            "function_call_output" if text("call_id") && output_of(item) => Ok(()),
            "function_call_output" => Err(
                "is a function_call_output without a string `call_id` and an `output` (a string \
                 or an array of content parts)"
                    .into(),
            ),
            "reasoning" if fields.get("summary").is_none_or(Value::is_array) => Ok(()),
            "reasoning" => Err("is reasoning whose `summary` is not an array".into()),
            "item_reference" => Ok(()),
            other if OTHER_TYPES.contains(&other) => Ok(()),
            other => Err(format!("has an unknown `type`: '{other}'")),
        },
        Some(_) => Err("has a `type` that is not a string".into()),
        None => Err("must be an item: an object with a `type` or a `role`".into()),
    }
}

fn output_of(item: &Value) -> bool {
    match &item["output"] {
        Value::String(_) => true,
        Value::Array(parts) => parts.iter().all(|part| check_part(part).is_ok()),
        _ => false,
    }
}

fn check_message(item: &Value) -> Result<(), String> {
    let role = match item.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role,
        Some(Value::String(role)) => {
            return Err(format!(
                "has an unknown `role`: '{role}' (one of user, assistant, system, developer)"
            ))
        }
        _ => return Err("is a message without a `role`".into()),
    };
    match item.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                check_part(part).map_err(|why| format!("has content[{index}] that {why}"))?;
            }
            Ok(())
        }
        _ => Err(format!(
            "is a {role} message without a `content` (a string or an array of content parts)"
        )),
    }
}

fn check_part(part: &Value) -> Result<(), String> {
    let kind = match part.get("type") {
        Some(Value::String(kind)) if PARTS.contains(&kind.as_str()) => kind.as_str(),
        Some(Value::String(kind)) => return Err(format!("has an unknown `type`: '{kind}'")),
        _ => return Err("is not a content part: an object with a `type`".into()),
    };
    let field = match kind {
        "input_text" | "output_text" => "text",
        "refusal" => "refusal",
        _ => return Ok(()),
    };
    match part.get(field) {
        Some(Value::String(_)) => Ok(()),
        _ => Err(format!("is {kind} without a string `{field}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_items_openai_takes_pass() {
        let items = [
            json!({"role": "user", "content": "hi"}),
            json!({"type": "message", "role": "developer", "content": [
                {"type": "input_text", "text": "be brief"}]}),
            json!({"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "ok", "annotations": []}]}),
            json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}),
            json!({"type": "function_call_output", "call_id": "c", "output": "sunny"}),
            json!({"type": "reasoning", "id": "rs_1", "summary": []}),
            json!({"type": "item_reference", "id": "msg_1"}),
            json!({"type": "compaction", "encrypted_content": "..."}),
        ];
        assert_eq!(check_items(&items), Ok(()));
    }

    #[test]
    fn an_output_must_answer_a_call_made_before_it() {
        let call = json!({"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"});
        let output =
            |id: &str| json!({"type": "function_call_output", "call_id": id, "output": "x"});
        assert_eq!(
            unanswered_output(&[call.clone(), output("a")], &[]),
            Ok(false)
        );
        assert_eq!(unanswered_output(&[output("b")], &["b"]), Ok(true));
        assert_eq!(
            unanswered_output(&[output("a"), call], &[]),
            Err((0, "a".to_owned()))
        );
    }

    #[test]
    fn what_upstream_would_refuse_is_named() {
        for (item, why) in [
            (json!(3), "must be an item"),
            (json!({"type": "message"}), "without a `role`"),
            (json!({"role": "robot", "content": "x"}), "unknown `role`"),
            (json!({"role": "user"}), "without a `content`"),
            (json!({"role": "user", "content": 4}), "without a `content`"),
            (
                json!({"role": "user", "content": [{"type": "input_text"}]}),
                "content[0] that is input_text without a string `text`",
            ),
            (
                json!({"role": "user", "content": [{"type": "made_up"}]}),
                "unknown `type`: 'made_up'",
            ),
            (json!({"type": "surprise"}), "unknown `type`: 'surprise'"),
            (json!({"type": "function_call", "name": "f"}), "call_id"),
            (
                json!({"type": "function_call_output", "call_id": "c"}),
                "`output`",
            ),
        ] {
            let (index, message) = check_items(std::slice::from_ref(&item)).unwrap_err();
            assert_eq!(index, 0);
            assert!(message.contains(why), "{item}: {message}");
        }
    }
}
