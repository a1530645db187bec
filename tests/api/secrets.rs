//! Secrets read at cold start from a real AWS API emulator (moto), not a mock of the SDK.

use chat_proxy::config::secrets::{resolve, Reference, Source};
use secrecy::ExposeSecret;

use crate::support::moto::MotoServer;

fn ssm(variable: &'static str, name: &str) -> Reference {
    Reference {
        variable,
        source: Source::SsmParameter(name.to_owned()),
    }
}

fn secret(variable: &'static str, id: &str) -> Reference {
    Reference {
        variable,
        source: Source::SecretsManager(id.to_owned()),
    }
}

#[tokio::test]
async fn a_secure_string_parameter_is_read_and_decrypted() {
    let moto = MotoServer::start();
    moto.put_parameter("/chat-proxy/openai-api-key", "sk-from-ssm")
        .await;
    let values = resolve(
        &[ssm("GPT_API_KEY", "/chat-proxy/openai-api-key")],
        moto.loader(),
    )
    .await
    .unwrap();
    assert_eq!(values["GPT_API_KEY"].expose_secret(), "sk-from-ssm");
}

#[tokio::test]
async fn a_secrets_manager_secret_is_read_by_arn_and_by_name() {
    let moto = MotoServer::start();
    let arn = moto
        .create_secret("chat-proxy/redis-url", "rediss://default:pw@host:6379")
        .await;
    for id in [arn.as_str(), "chat-proxy/redis-url"] {
        let values = resolve(&[secret("REDIS_URL", id)], moto.loader())
            .await
            .unwrap();
        assert_eq!(
            values["REDIS_URL"].expose_secret(),
            "rediss://default:pw@host:6379"
        );
    }
}

#[tokio::test]
async fn every_missing_secret_is_named_at_once_without_values() {
    let moto = MotoServer::start();
    moto.put_parameter("/app/present", "sk-present-value").await;
    let error = resolve(
        &[
            ssm("GPT_API_KEY", "/app/missing"),
            secret("REDIS_URL", "app/no-such-secret"),
            ssm("REDIS_PASSWORD", "/app/present"),
        ],
        moto.loader(),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert_eq!(error.problems.len(), 2, "{text}");
    assert!(
        text.contains("GPT_API_KEY (SSM parameter /app/missing)"),
        "{text}"
    );
    assert!(text.contains("ParameterNotFound"), "{text}");
    assert!(
        text.contains("REDIS_URL (Secrets Manager secret app/no-such-secret)"),
        "{text}"
    );
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert!(!text.contains("sk-present-value"), "{text}");
}

#[tokio::test]
async fn access_denied_is_reported_naming_the_parameter() {
    // moto enforces IAM once its first N calls (the setup below) are done.
    let moto = MotoServer::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    moto.put_parameter("/app/key", "sk-secret-value").await;
    let iam = aws_sdk_iam_lite::Iam::new(&moto.endpoint());
    iam.create_user("no-rights").await;
    let (access_key, secret_key) = iam.create_access_key("no-rights").await;

    let error = resolve(
        &[ssm("GPT_API_KEY", "/app/key")],
        moto.loader_as(&access_key, &secret_key),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("GPT_API_KEY (SSM parameter /app/key)"),
        "{text}"
    );
    // AWS answers AccessDeniedException; moto answers 403 with an XML body that the
    // JSON-protocol SDK cannot parse, so the reason comes through as the HTTP status.
    assert!(
        text.contains("AccessDenied") || text.contains("HTTP 403"),
        "{text}"
    );
    assert!(!text.contains("sk-secret-value"), "{text}");
}

/// Just enough of IAM's query API to make a user with keys and no rights. The SDK's IAM
/// crate would be a large build for two calls; moto accepts these unsigned calls while
/// `INITIAL_NO_AUTH_ACTION_COUNT` lasts (it routes on the credential scope's service).
mod aws_sdk_iam_lite {
    pub struct Iam {
        endpoint: String,
        http: reqwest::Client,
    }

    impl Iam {
        pub fn new(endpoint: &str) -> Iam {
            chat_proxy::install_tls_provider();
            Iam {
                endpoint: endpoint.to_owned(),
                http: reqwest::Client::new(),
            }
        }

        async fn call(&self, form: &str) -> String {
            self.http
                .post(&self.endpoint)
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20261125/us-east-1/iam/aws4_request, \
                     SignedHeaders=host, Signature=0",
                )
                .body(format!("{form}&Version=2010-05-08"))
                .send()
                .await
                .expect("IAM call")
                .text()
                .await
                .expect("IAM answer")
        }

        pub async fn create_user(&self, name: &str) {
            let answer = self
                .call(&format!("Action=CreateUser&UserName={name}"))
                .await;
            assert!(answer.contains("<UserName>"), "{answer}");
        }

        pub async fn create_access_key(&self, user: &str) -> (String, String) {
            let answer = self
                .call(&format!("Action=CreateAccessKey&UserName={user}"))
                .await;
            let field = |tag: &str| {
                let start = answer.find(&format!("<{tag}>")).expect(tag) + tag.len() + 2;
                let end = answer[start..].find('<').expect(tag) + start;
                answer[start..end].to_owned()
            };
            (field("AccessKeyId"), field("SecretAccessKey"))
        }
    }
}

#[tokio::test]
async fn every_parameter_is_read_in_one_call_and_trimmed() {
    let moto = MotoServer::start();
    moto.put_parameter("/app/key", "sk-from-file\n").await;
    moto.put_parameter("/app/redis-url", "redis://h:6379\n")
        .await;
    moto.put_parameter("/app/keys", "alice:sk-a1\n").await;
    let proxy = crate::support::moto::AwsProxy::start(&moto, 0).await;
    let values = resolve(
        &[
            ssm("GPT_API_KEY", "/app/key"),
            ssm("REDIS_URL", "/app/redis-url"),
            ssm("PROXY_API_KEYS", "/app/keys"),
        ],
        proxy.loader(),
    )
    .await
    .unwrap();
    assert_eq!(values["GPT_API_KEY"].expose_secret(), "sk-from-file");
    assert_eq!(values["REDIS_URL"].expose_secret(), "redis://h:6379");
    assert_eq!(values["PROXY_API_KEYS"].expose_secret(), "alice:sk-a1");
    assert_eq!(proxy.calls(), ["AmazonSSM.GetParameters"]);
}

#[tokio::test]
async fn parameters_take_one_call_and_each_secret_one_more() {
    let moto = MotoServer::start();
    moto.put_parameter("/app/key", "sk-1").await;
    moto.put_parameter("/app/keys", "alice:sk-a1").await;
    let password = moto.create_secret("app/redis-password", "hunter2\n").await;
    let url = moto.create_secret("app/redis-url", "redis://h:6379").await;
    let proxy = crate::support::moto::AwsProxy::start(&moto, 0).await;
    let values = resolve(
        &[
            ssm("GPT_API_KEY", "/app/key"),
            secret("REDIS_PASSWORD", &password),
            ssm("PROXY_API_KEYS", "/app/keys"),
            secret("REDIS_URL", &url),
        ],
        proxy.loader(),
    )
    .await
    .unwrap();
    assert_eq!(values["REDIS_PASSWORD"].expose_secret(), "hunter2");
    assert_eq!(values["REDIS_URL"].expose_secret(), "redis://h:6379");
    let mut calls = proxy.calls();
    calls.sort();
    assert_eq!(
        calls,
        [
            "AmazonSSM.GetParameters",
            "secretsmanager.GetSecretValue",
            "secretsmanager.GetSecretValue"
        ]
    );
}

#[tokio::test]
async fn a_throttled_read_is_retried_within_the_cold_start() {
    let moto = MotoServer::start();
    moto.put_parameter("/app/key", "sk-after-throttling").await;
    let proxy = crate::support::moto::AwsProxy::start(&moto, 1).await;
    let values = resolve(&[ssm("GPT_API_KEY", "/app/key")], proxy.loader())
        .await
        .unwrap();
    assert_eq!(values["GPT_API_KEY"].expose_secret(), "sk-after-throttling");
    assert_eq!(
        proxy.calls(),
        ["AmazonSSM.GetParameters", "AmazonSSM.GetParameters"],
        "throttled once, then read"
    );
}

#[tokio::test]
async fn a_read_throttled_past_the_retries_names_the_throttling() {
    let moto = MotoServer::start();
    moto.put_parameter("/app/key", "sk-never-read").await;
    let proxy = crate::support::moto::AwsProxy::start(&moto, 100).await;
    let error = resolve(&[ssm("GPT_API_KEY", "/app/key")], proxy.loader())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("GPT_API_KEY (SSM parameter /app/key)"),
        "{text}"
    );
    assert!(text.contains("Throttling"), "{text}");
}
