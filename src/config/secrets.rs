//! Secrets from AWS, read once at cold start: SSM Parameter Store (SecureString) or Secrets
//! Manager, in place of plain environment variables.
//!
//! For each secret variable `NAME` (`GPT_API_KEY`, `REDIS_URL`, `REDIS_PASSWORD`,
//! `PROXY_API_KEYS`, `SEAL_KEYS`) the
//! function may be given `NAME_SSM_PARAMETER` (a parameter name) or `NAME_SECRET_ARN` (a
//! secret's ARN or name; its whole `SecretString` is the value). A plain `NAME` still works,
//! for local runs. Nothing here runs, and no AWS client is built, when no reference is set.
//! Errors name the variable and where it was read from, never a value.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use futures_util::future::join_all;
use secrecy::SecretString;

use super::ConfigError;

/// The variables whose value may come from AWS.
pub const SECRET_VARIABLES: [&str; 5] = [
    "GPT_API_KEY",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "PROXY_API_KEYS",
    "SEAL_KEYS",
];

/// Where one secret variable's value is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    SsmParameter(String),
    SecretsManager(String),
}

/// A secret variable to be read from AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub variable: &'static str,
    pub source: Source,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::SsmParameter(name) => write!(f, "{} (SSM parameter {name})", self.variable),
            Source::SecretsManager(id) => {
                write!(f, "{} (Secrets Manager secret {id})", self.variable)
            }
        }
    }
}

/// Finds the `NAME_SSM_PARAMETER` / `NAME_SECRET_ARN` references in the environment.
/// Setting both for one variable is an error: which one wins would be a guess.
pub fn references(lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<Reference>, ConfigError> {
    let set = |name: String| lookup(&name).filter(|value| !value.trim().is_empty());
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for variable in SECRET_VARIABLES {
        let ssm = set(format!("{variable}_SSM_PARAMETER"));
        let secret = set(format!("{variable}_SECRET_ARN"));
        let source = match (ssm, secret) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "set only one of {variable}_SSM_PARAMETER and {variable}_SECRET_ARN"
                ));
                continue;
            }
            (Some(name), None) => Source::SsmParameter(name),
            (None, Some(id)) => Source::SecretsManager(id),
            (None, None) => continue,
        };
        found.push(Reference { variable, source });
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(ConfigError { problems })
    }
}

/// Every secret that could not be read, each named with where it was looked for.
#[derive(Debug, thiserror::Error)]
#[error("cannot read secrets: {}", .problems.join("; "))]
pub struct SecretsError {
    pub problems: Vec<String>,
}

/// The AWS settings of the Lambda environment (region, credentials, `AWS_ENDPOINT_URL`),
/// with an HTTP client on the process's one TLS stack and timeouts that fit a cold start.
pub fn aws_loader() -> ConfigLoader {
    crate::tls::install_provider();
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(5))
                .build(),
        )
}

/// Reads every referenced secret and returns them by variable name: every SSM parameter in
/// one `GetParameters` call (up to ten a call), each Secrets Manager secret in its own call,
/// all at once. A burst of cold starts thus costs SSM one request per start, not one per
/// secret (its default limit is 40 requests a second); a throttled call is retried by the
/// SDK within the operation timeout. With no references it returns at once without
/// touching AWS.
pub async fn resolve(
    references: &[Reference],
    loader: ConfigLoader,
) -> Result<HashMap<&'static str, SecretString>, SecretsError> {
    if references.is_empty() {
        return Ok(HashMap::new());
    }
    let sdk = loader.load().await;
    let parameters: Vec<(&Reference, &str)> = references
        .iter()
        .filter_map(|r| match &r.source {
            Source::SsmParameter(name) => Some((r, name.as_str())),
            Source::SecretsManager(_) => None,
        })
        .collect();
    let secrets: Vec<(&Reference, &str)> = references
        .iter()
        .filter_map(|r| match &r.source {
            Source::SecretsManager(id) => Some((r, id.as_str())),
            Source::SsmParameter(_) => None,
        })
        .collect();

    let ssm = (!parameters.is_empty()).then(|| aws_sdk_ssm::Client::new(&sdk));
    let secrets_manager = (!secrets.is_empty()).then(|| aws_sdk_secretsmanager::Client::new(&sdk));
    let parameter_reads = ssm.as_ref().map(|client| {
        join_all(
            parameters
                .chunks(MAX_PARAMETERS_PER_CALL)
                .map(|batch| read_parameters(client, batch)),
        )
    });
    let secret_reads = secrets_manager.as_ref().map(|client| {
        join_all(
            secrets
                .iter()
                .map(|(reference, id)| async move { (*reference, read_secret(client, id).await) }),
        )
    });
    let (parameter_results, secret_results) = tokio::join!(
        async {
            match parameter_reads {
                Some(reads) => reads.await.into_iter().flatten().collect(),
                None => Vec::new(),
            }
        },
        async {
            match secret_reads {
                Some(reads) => reads.await,
                None => Vec::new(),
            }
        }
    );

    let mut values = HashMap::new();
    let mut problems = Vec::new();
    let results: Vec<(&Reference, Result<SecretString, String>)> = parameter_results
        .into_iter()
        .chain(secret_results)
        .collect();
    // Reported in the order the references were given, whatever order the reads ended in.
    for reference in references {
        let Some((_, result)) = results.iter().find(|(r, _)| *r == reference) else {
            continue;
        };
        match result {
            Ok(value) => {
                values.insert(reference.variable, value.clone());
            }
            Err(why) => problems.push(format!("{reference}: {why}")),
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(SecretsError { problems })
    }
}

/// `GetParameters` takes at most ten names.
const MAX_PARAMETERS_PER_CALL: usize = 10;

/// One `GetParameters` call for up to ten parameters; each reference gets its own result.
async fn read_parameters<'r>(
    client: &aws_sdk_ssm::Client,
    batch: &[(&'r Reference, &str)],
) -> Vec<(&'r Reference, Result<SecretString, String>)> {
    let names: Vec<String> = batch.iter().map(|(_, name)| (*name).to_owned()).collect();
    let output = client
        .get_parameters()
        .set_names(Some(names))
        .with_decryption(true)
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            let why = describe(&error);
            return batch.iter().map(|(r, _)| (*r, Err(why.clone()))).collect();
        }
    };
    batch
        .iter()
        .map(|(reference, name)| {
            let found = output
                .parameters()
                .iter()
                .find(|p| p.name() == Some(*name) || p.arn() == Some(*name));
            let result = match found {
                Some(parameter) => non_empty(parameter.value()),
                None if output.invalid_parameters().iter().any(|n| n == name) => {
                    Err("ParameterNotFound: no such parameter".to_owned())
                }
                None => Err("ParameterNotFound: SSM did not return it".to_owned()),
            };
            (*reference, result)
        })
        .collect()
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> Result<SecretString, String> {
    let output = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    non_empty(output.secret_string())
}

/// A secret's value without surrounding whitespace (a value written from a file ends in a
/// newline); an empty one is an error.
fn non_empty(value: Option<&str>) -> Result<SecretString, String> {
    match value.map(str::trim) {
        Some(value) if !value.is_empty() => Ok(SecretString::from(value.to_owned())),
        _ => Err("it is empty".to_owned()),
    }
}

/// A short reason from an AWS error: its code (`ParameterNotFound`, `AccessDeniedException`,
/// ...) and message, which name resources but never hold secret values; failing those, the
/// HTTP status and the SDK's own account of what went wrong.
pub(crate) fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let (Some(code), message) = (error.code(), error.message()) {
        return match message {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        };
    }
    let mut text = match error.raw_response() {
        Some(response) => format!("HTTP {}: {error}", response.status().as_u16()),
        None => error.to_string(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(vars: &[(&str, &str)]) -> Result<Vec<Reference>, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        references(|name| vars.get(name).cloned())
    }

    #[test]
    fn references_are_found_by_suffix() {
        let found = refs(&[
            ("GPT_API_KEY_SSM_PARAMETER", "/app/key"),
            (
                "REDIS_URL_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:redis",
            ),
            ("REDIS_PASSWORD_SSM_PARAMETER", ""),
        ])
        .unwrap();
        assert_eq!(
            found,
            vec![
                Reference {
                    variable: "GPT_API_KEY",
                    source: Source::SsmParameter("/app/key".into())
                },
                Reference {
                    variable: "REDIS_URL",
                    source: Source::SecretsManager(
                        "arn:aws:secretsmanager:eu-west-1:1:secret:redis".into()
                    )
                },
            ]
        );
    }

    #[test]
    fn two_sources_for_one_secret_are_refused() {
        let err = refs(&[
            ("GPT_API_KEY_SSM_PARAMETER", "/app/key"),
            ("GPT_API_KEY_SECRET_ARN", "arn:aws:secretsmanager:x"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("GPT_API_KEY_SSM_PARAMETER"));
    }

    #[tokio::test]
    async fn no_references_means_no_aws_call() {
        // A loader pointing nowhere: it would fail if it were used.
        let loader =
            aws_config::defaults(BehaviorVersion::latest()).endpoint_url("http://127.0.0.1:9");
        assert!(resolve(&[], loader).await.unwrap().is_empty());
    }
}
