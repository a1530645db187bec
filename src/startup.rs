//! Cold start: secrets from AWS, then the configuration, then the clients, once.

use secrecy::ExposeSecret;

use crate::app::{App, BuildError};
use crate::config::secrets::{self, SecretsError};
use crate::config::{Config, ConfigError};

/// Why the function could not start. Every variant names what is wrong and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Builds the app from the process environment, reading the secrets it names from AWS.
pub async fn app_from_env() -> Result<App, StartupError> {
    let env = |name: &str| std::env::var(name).ok();
    let references = secrets::references(env)?;
    let from_aws = secrets::resolve(&references, secrets::aws_loader()).await?;
    let config = Config::from_lookup(|name| {
        from_aws
            .get(name)
            .map(|value| value.expose_secret().to_owned())
            .or_else(|| env(name))
    })?;
    if let Some(warning) = startup_warning(&config) {
        tracing::warn!("{warning}");
    }
    Ok(App::build(&config)?)
}

/// What an operator must know before anything else, said in the very first log line.
fn startup_warning(config: &Config) -> Option<String> {
    let mut warnings = Vec::new();
    if config.redis.is_none() {
        warnings.push(
            "NO REDIS CONFIGURED: chats are kept in this process's memory only and are lost \
             when it stops. Set REDIS_URL (or REDIS_HOST) for anything but a local run.",
        );
    }
    if config.openai.is_echo() {
        warnings.push(
            "ECHO UPSTREAM: OPENAI_BASE_URL=echo, so every answer is a built-in echo, not \
             OpenAI's. For local runs only; set GPT_API_KEY and unset OPENAI_BASE_URL for real \
             answers.",
        );
    }
    if config.callers.is_open() {
        warnings.push(
            "OPEN API: PROXY_API_KEYS is not set, so anyone who knows the URL can read and \
             write every chat and spend the OpenAI key.",
        );
    }
    (!warnings.is_empty()).then(|| warnings.join(" "))
}
