//! Upstream's settings: where OpenAI is, with which key, which models callers may name, and
//! how long its calls and streams may take.

use std::time::Duration;

use lambda_http::http::HeaderValue;
use secrecy::SecretString;

use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Empty for the echo upstream, which needs none.
    pub api_key: SecretString,
    /// An OpenAI-compatible API, or [`ECHO`] for the built-in echo upstream.
    pub base_url: String,
    pub chat_model: String,
    pub vision_model: String,
    pub moderation_model: String,
    /// The whole budget of one upstream call answered whole, retries included.
    pub timeout: Duration,
}

/// `OPENAI_BASE_URL` that selects the built-in echo upstream: no key, no network.
pub const ECHO: &str = "echo";

impl OpenAiConfig {
    pub fn is_echo(&self) -> bool {
        self.base_url == ECHO
    }
}

/// The models callers may name in OpenAI's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedModels {
    /// `*`: any model upstream serves.
    Any,
    /// These, in the order given.
    Only(Vec<String>),
}

impl AllowedModels {
    /// Parses `ALLOWED_MODELS`: `*`, or model names separated by commas.
    pub fn parse(raw: &str) -> Result<AllowedModels, String> {
        let names: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        match names.as_slice() {
            [star] if star == "*" => Ok(AllowedModels::Any),
            _ if names.iter().any(|n| n == "*") => {
                Err("ALLOWED_MODELS is either * or a list of model names, not both".to_owned())
            }
            [] => Err("ALLOWED_MODELS names no model".to_owned()),
            _ => Ok(AllowedModels::Only(names)),
        }
    }

    pub fn allows(&self, model: &str) -> bool {
        match self {
            AllowedModels::Any => true,
            AllowedModels::Only(models) => models.iter().any(|m| m == model),
        }
    }
}

const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_MODEL: &str = "gpt-4o-mini";
const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";
/// A buffered answer sends nothing until it is whole, and API Gateway drops a response that
/// stays silent for 5 minutes (regional endpoint): a whole upstream call fits in 290 s.
const MAX_TIMEOUT_SECONDS: u64 = 290;
/// A stream may last as long as the function (15 minutes), less the time to store the turn.
const DEFAULT_STREAM_TIMEOUT_SECONDS: u64 = 840;
const MAX_STREAM_TIMEOUT_SECONDS: u64 = 890;

/// What upstream's part of the environment says.
pub(super) struct Upstream {
    pub openai: OpenAiConfig,
    pub allowed_models: AllowedModels,
    pub stream_timeout: Duration,
    pub keep_alive: Duration,
    pub max_prompt_tokens: u32,
    pub compaction: Option<Compaction>,
}

/// `COMPACT_AT_TOKENS` and what goes with it: a stored chat whose request would pass it
/// has the turns its window moves past compacted, rather than only cut (`turn/compact.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    /// The request size at which the window moves: at most `MAX_PROMPT_TOKENS`.
    pub at_tokens: u32,
    /// `COMPACT_MODEL`: the model that compacts; `None`, the turn's own.
    pub model: Option<String>,
    /// `COMPACT_PROMPT`: what the summary call asks, after the turns it summarizes.
    pub prompt: String,
}

/// A window smaller than this would compact nearly every turn.
const MIN_COMPACT_AT_TOKENS: u32 = 500;

/// What the summary call asks by default: a summary that lets the conversation go on.
pub const DEFAULT_COMPACT_PROMPT: &str = "Summarize the conversation so far for your own later \
use: it replaces the messages above, which you will no longer see. Keep every fact, name, \
number, decision, open question and preference the user stated, and what you promised or \
concluded; leave out pleasantries. Write it in the conversation's language, as short notes, \
in at most 300 words. Answer with the summary alone.";

pub(super) fn read(env: &mut Reader<'_>) -> Upstream {
    let base_url = env
        .get("OPENAI_BASE_URL")
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let echo = base_url.eq_ignore_ascii_case(ECHO);
    if !(echo || base_url.starts_with("http://") || base_url.starts_with("https://")) {
        env.problem("OPENAI_BASE_URL must start with http:// or https://, or be echo");
    }
    let api_key = match env.get("GPT_API_KEY").or_else(|| env.get("OPENAI_API_KEY")) {
        // The key goes out in `Authorization: Bearer <key>`; one that cannot be a header
        // value would fail every call, so it stops the start instead (never quoted).
        Some(key) if HeaderValue::from_str(&format!("Bearer {key}")).is_err() => {
            env.problem(
                "GPT_API_KEY holds characters an HTTP header cannot carry (a line break or \
                 another control character inside it?)",
            );
            SecretString::from(String::new())
        }
        Some(key) => SecretString::from(key),
        None if echo => SecretString::from(String::new()),
        None => {
            env.problem(
                "GPT_API_KEY is required (or OPENAI_API_KEY, or GPT_API_KEY_SSM_PARAMETER / \
                 GPT_API_KEY_SECRET_ARN to read it from AWS)",
            );
            SecretString::from(String::new())
        }
    };
    let openai = OpenAiConfig {
        api_key,
        base_url: if echo {
            ECHO.to_owned()
        } else {
            base_url.trim_end_matches('/').to_owned()
        },
        chat_model: env.text("CHAT_MODEL", DEFAULT_MODEL),
        vision_model: env.text("VISION_MODEL", DEFAULT_MODEL),
        moderation_model: env.text("MODERATION_MODEL", DEFAULT_MODERATION_MODEL),
        timeout: Duration::from_secs(env.number(
            "OPENAI_TIMEOUT_SECONDS",
            MAX_TIMEOUT_SECONDS,
            1..=MAX_TIMEOUT_SECONDS,
        )),
    };
    let configured = |openai: &OpenAiConfig| {
        let mut models = vec![openai.chat_model.clone()];
        if openai.vision_model != openai.chat_model {
            models.push(openai.vision_model.clone());
        }
        AllowedModels::Only(models)
    };
    let allowed_models = env
        .parsed(
            "ALLOWED_MODELS",
            |raw| AllowedModels::parse(raw).map_err(|problem| vec![problem]),
            || AllowedModels::Any,
        )
        .unwrap_or_else(|| configured(&openai));
    let max_prompt_tokens = env.number("MAX_PROMPT_TOKENS", 32_000, 1_000..=2_000_000);
    // 0 (the template's default) or unset: stored chats only cut what their window moves past.
    let compact_at = env.number("COMPACT_AT_TOKENS", 0, 0..=max_prompt_tokens);
    if (1..MIN_COMPACT_AT_TOKENS).contains(&compact_at) {
        env.problem(&format!(
            "COMPACT_AT_TOKENS must be 0 (off) or from {MIN_COMPACT_AT_TOKENS} to \
             MAX_PROMPT_TOKENS ({max_prompt_tokens}), got {compact_at}"
        ));
    }
    let compaction = (compact_at >= MIN_COMPACT_AT_TOKENS).then(|| Compaction {
        at_tokens: compact_at,
        model: env.get("COMPACT_MODEL"),
        prompt: env.text("COMPACT_PROMPT", DEFAULT_COMPACT_PROMPT),
    });
    Upstream {
        allowed_models,
        stream_timeout: Duration::from_secs(env.number(
            "STREAM_TIMEOUT_SECONDS",
            DEFAULT_STREAM_TIMEOUT_SECONDS,
            1..=MAX_STREAM_TIMEOUT_SECONDS,
        )),
        keep_alive: Duration::from_secs(env.number("KEEP_ALIVE_SECONDS", 15, 1..=15)),
        max_prompt_tokens,
        compaction,
        openai,
    }
}
