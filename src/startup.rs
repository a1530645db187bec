//! Cold start: secrets from AWS, then the configuration, then the clients, once.

use secrecy::ExposeSecret;

use crate::app::{App, BuildError};
use crate::config::secrets::{self, SecretsError};
use crate::config::{Config, ConfigError};
use crate::store::{RedisStore, Resealed};

/// Why the function could not start. Every variant names what is wrong and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("reseal: {0}")]
    Reseal(String),
}

/// The configuration from the process environment, with the secrets it names read from AWS.
async fn config_from_env() -> Result<Config, StartupError> {
    let env = |name: &str| std::env::var(name).ok();
    let references = secrets::references(env)?;
    let from_aws = secrets::resolve(&references, secrets::aws_loader()).await?;
    Ok(Config::from_lookup(|name| {
        from_aws
            .get(name)
            .map(|value| value.expose_secret().to_owned())
            .or_else(|| env(name))
    })?)
}

/// Builds the app from the process environment, reading the secrets it names from AWS.
pub async fn app_from_env() -> Result<App, StartupError> {
    let config = config_from_env().await?;
    tracing::info!("{}", serving(&config));
    for warning in startup_warnings(&config) {
        tracing::warn!("{warning}");
    }
    Ok(App::build(&config)?)
}

/// `bootstrap reseal` (`make reseal`): every value in the configured Redis sealed again
/// under the first of `SEAL_KEYS`, so that the keys after it can be dropped.
pub async fn reseal_from_env() -> Result<Resealed, StartupError> {
    let config = config_from_env().await?;
    let (Some(target), Some(keys)) = (&config.redis, &config.seal_keys) else {
        return Err(StartupError::Reseal(
            "reseal needs REDIS_URL (or REDIS_HOST) and SEAL_KEYS".to_owned(),
        ));
    };
    let store = RedisStore::connect(
        target,
        config.store.clone(),
        config.redis_timeout,
        config.redis_ca_file.as_deref(),
    )
    .map_err(|error| StartupError::Reseal(error.to_string()))?
    .sealed(Some(keys.clone()));
    if !store.wait_connected(config.redis_timeout * 4).await {
        return Err(StartupError::Reseal("Redis did not answer".to_owned()));
    }
    store
        .reseal()
        .await
        .map_err(|error| StartupError::Reseal(error.to_string()))
}

/// The first log line: which upstream answers and which store keeps the chats.
fn serving(config: &Config) -> String {
    let upstream = if config.openai.is_echo() {
        "the built-in echo".to_owned()
    } else {
        // An OpenAI-compatible base URL may carry a user and password, or a key in its query:
        // never logged.
        match url::Url::parse(&config.openai.base_url) {
            Ok(mut url) => {
                let _ = url.set_password(None);
                let _ = url.set_username("");
                url.set_query(None);
                url.to_string()
            }
            Err(_) => "an unreadable OPENAI_BASE_URL".to_owned(),
        }
    };
    let store = match &config.redis {
        Some(redis) => format!("Redis at {}", redis.describe()),
        None => "this process's memory".to_owned(),
    };
    format!("upstream: {upstream}; chats kept in {store}")
}

/// What an operator must know before anything else, a log line each, right after the first.
fn startup_warnings(config: &Config) -> Vec<&'static str> {
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
    warnings
}
