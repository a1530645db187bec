//! The Lua scripts every write runs, one `.lua` file each in `scripts/`, whose header says
//! its KEYS, its ARGV, what it returns and why it is safe to run twice. They are read into
//! the binary and made ready once, at cold start: the header comments are left out of what
//! goes over the wire, the chat scripts get `touch` (the expiry of a chat's keys, and the
//! stamp of its last write) and `check` (the write model's check) prepended, and
//! `append_turn`, `add_usage` and `index_chat`,
//! which are functions, are called alone or together by `record` (a turn's whole write in
//! one script, where that is allowed).

/// A script as it is sent: its body, and the SHA-1 it is called by.
pub(super) struct Script {
    pub body: String,
    pub sha: String,
}

impl Script {
    fn new(body: String) -> Script {
        Script {
            sha: fred::util::sha1_hash(&body),
            body,
        }
    }
}

/// The scripts as they are sent.
pub(super) struct Scripts {
    /// The claim on a chat's newest turn, made in a turn's read.
    pub claim_newest: Script,
    pub release_claim: Script,
    pub append_turn: Script,
    pub set_chat_prompt: Script,
    pub clear: Script,
    pub set_conversation: Script,
    /// `append_turn`'s functions come first: it counts a turn's messages as they do.
    pub rewrite_turn: Script,
    pub count_request: Script,
    pub add_usage: Script,
    /// `append_turn` and `add_usage` in one script.
    pub record: Script,
    pub claim: Script,
    pub release: Script,
    pub set_title: Script,
    pub create_chat: Script,
    pub delete_chat: Script,
    /// A chat's place in its caller's list, alone (a turn's is in `add_usage`).
    pub index_chat: Script,
    pub list_chats: Script,
    /// Sealed values in place of what they were read as (`make reseal`).
    pub reseal: Script,
    /// A chat's link, listed before its snapshot is kept.
    pub share: Script,
    /// A background run's record (`store/runs.rs`): kept, taken, cancelled, its events,
    /// ended.
    pub queue_run: Script,
    pub start_run: Script,
    pub cancel_run: Script,
    pub record_events: Script,
    pub end_run: Script,
    /// A live turn's record (`store/runs.rs`), kept and named as its chat's.
    pub begin_live: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        // Every chat script gets both: touch renews a chat's expiry, check makes the write
        // model's check.
        let touch = format!(
            "{}{}",
            body(include_str!("scripts/touch.lua")),
            body(include_str!("scripts/check.lua"))
        );
        let append_turn = body(include_str!("scripts/append_turn.lua"));
        let index_chat = body(include_str!("scripts/index_chat.lua"));
        let add_usage = format!(
            "{index_chat}{}",
            body(include_str!("scripts/add_usage.lua"))
        );
        let chat = |script: &str| Script::new(format!("{touch}{}", body(script)));
        let alone = |script: &str| Script::new(body(script).to_owned());
        Scripts {
            claim_newest: alone(include_str!("scripts/claim_newest.lua")),
            release_claim: alone(include_str!("scripts/release_claim.lua")),
            append_turn: Script::new(format!(
                "{touch}{append_turn}return append_turn(KEYS, ARGV)\n"
            )),
            add_usage: Script::new(format!("{add_usage}return add_usage(KEYS, ARGV)\n")),
            record: Script::new(format!(
                "{touch}{append_turn}{add_usage}{}",
                body(include_str!("scripts/record.lua"))
            )),
            set_chat_prompt: chat(include_str!("scripts/set_chat_prompt.lua")),
            clear: chat(include_str!("scripts/clear.lua")),
            set_conversation: chat(include_str!("scripts/set_conversation.lua")),
            rewrite_turn: Script::new(format!(
                "{touch}{append_turn}{}",
                body(include_str!("scripts/rewrite_turn.lua"))
            )),
            count_request: alone(include_str!("scripts/count_request.lua")),
            claim: alone(include_str!("scripts/claim.lua")),
            release: alone(include_str!("scripts/release.lua")),
            set_title: chat(include_str!("scripts/set_title.lua")),
            create_chat: chat(include_str!("scripts/create_chat.lua")),
            delete_chat: chat(include_str!("scripts/delete_chat.lua")),
            index_chat: Script::new(format!("{index_chat}return index_chat(KEYS, ARGV)\n")),
            list_chats: alone(include_str!("scripts/list_chats.lua")),
            reseal: alone(include_str!("scripts/reseal.lua")),
            share: alone(include_str!("scripts/share.lua")),
            queue_run: alone(include_str!("scripts/queue_run.lua")),
            start_run: alone(include_str!("scripts/start_run.lua")),
            cancel_run: alone(include_str!("scripts/cancel_run.lua")),
            record_events: alone(include_str!("scripts/record_events.lua")),
            end_run: alone(include_str!("scripts/end_run.lua")),
            begin_live: alone(include_str!("scripts/begin_live.lua")),
        }
    }
}

impl Scripts {
    /// Every script, to load into Redis.
    fn all(&self) -> [&Script; 25] {
        [
            &self.claim_newest,
            &self.release_claim,
            &self.append_turn,
            &self.set_chat_prompt,
            &self.clear,
            &self.set_conversation,
            &self.rewrite_turn,
            &self.count_request,
            &self.add_usage,
            &self.record,
            &self.claim,
            &self.release,
            &self.set_title,
            &self.create_chat,
            &self.delete_chat,
            &self.index_chat,
            &self.list_chats,
            &self.reseal,
            &self.share,
            &self.queue_run,
            &self.start_run,
            &self.cancel_run,
            &self.record_events,
            &self.end_run,
            &self.begin_live,
        ]
    }

    /// Every script's body, to load into Redis.
    pub fn bodies(&self) -> Vec<String> {
        self.all()
            .iter()
            .map(|script| script.body.clone())
            .collect()
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
        for script in scripts.all() {
            assert!(!script.body.starts_with("--"), "{}", script.body);
            assert!(script.body.contains("return"), "{}", script.body);
            assert_eq!(script.sha.len(), 40);
        }
        assert!(scripts.append_turn.body.starts_with("local function touch"));
        assert!(!scripts.claim.body.contains("touch"));
        // The SHA-1 Redis knows a script by.
        assert_eq!(
            Script::new("return 1".to_owned()).sha,
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
