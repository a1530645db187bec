//! The Lua scripts every write runs, one `.lua` file each in `scripts/`, whose header says
//! its KEYS, its ARGV, what it returns and why it is safe to run twice. They are read into
//! the binary and made ready once, at cold start: the header comments are left out of what
//! goes over the wire, the chat scripts get `touch` (the expiry of a chat's keys)
//! prepended, and `append_turn` and `add_usage`, which are functions, are called alone or
//! both by `record` (a turn's whole write in one script, where that is allowed).

/// The scripts as they are sent.
pub(super) struct Scripts {
    pub append_turn: String,
    pub set_chat_prompt: String,
    pub clear: String,
    pub count_request: String,
    pub add_usage: String,
    /// `append_turn` and `add_usage` in one script.
    pub record: String,
    pub claim: String,
    pub release: String,
}

impl Scripts {
    pub fn new() -> Scripts {
        let touch = body(include_str!("scripts/touch.lua"));
        let append_turn = body(include_str!("scripts/append_turn.lua"));
        let add_usage = body(include_str!("scripts/add_usage.lua"));
        let chat = |script: &str| format!("{touch}{}", body(script));
        Scripts {
            append_turn: format!("{touch}{append_turn}return append_turn(KEYS, ARGV)\n"),
            add_usage: format!("{add_usage}return add_usage(KEYS, ARGV)\n"),
            record: format!(
                "{touch}{append_turn}{add_usage}{}",
                body(include_str!("scripts/record.lua"))
            ),
            set_chat_prompt: chat(include_str!("scripts/set_chat_prompt.lua")),
            clear: chat(include_str!("scripts/clear.lua")),
            count_request: body(include_str!("scripts/count_request.lua")).to_owned(),
            claim: body(include_str!("scripts/claim.lua")).to_owned(),
            release: body(include_str!("scripts/release.lua")).to_owned(),
        }
    }
}

/// A script without its header: the comment lines it starts with.
fn body(script: &str) -> &str {
    let mut rest = script;
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_stay_home_and_chat_scripts_can_touch() {
        let scripts = Scripts::new();
        for script in [
            &scripts.append_turn,
            &scripts.set_chat_prompt,
            &scripts.clear,
            &scripts.count_request,
            &scripts.add_usage,
            &scripts.record,
            &scripts.claim,
            &scripts.release,
        ] {
            assert!(!script.starts_with("--"), "{script}");
            assert!(script.contains("return"), "{script}");
        }
        assert!(scripts.append_turn.starts_with("local function touch"));
        assert!(!scripts.claim.contains("touch"));
    }
}
