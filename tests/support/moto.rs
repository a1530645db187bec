//! A real AWS API emulator (moto_server, PyPI `moto[server]`) on a free loopback port, for
//! the SSM and Secrets Manager code paths. `make test` installs it into `.venv/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{ConfigLoader, Region};
use aws_sdk_ssm::config::Credentials;

use super::redis::free_port;

pub const REGION: &str = "us-east-1";

pub struct MotoServer {
    port: u16,
    child: Child,
}

/// `MOTO_SERVER` if set, else the project's `.venv`, else whatever is on PATH.
fn executable() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return path.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

impl MotoServer {
    pub fn start() -> MotoServer {
        MotoServer::start_with(&[])
    }

    /// Starts moto with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to make it
    /// enforce IAM after the setup calls.
    pub fn start_with(env: &[(&str, &str)]) -> MotoServer {
        let port = free_port();
        let child = Command::new(executable())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server must be installed: make test installs it (pip install 'moto[server]')",
            );
        let server = MotoServer { port, child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// AWS settings pointing at this emulator, with the given credentials.
    pub fn loader_as(&self, access_key: &str, secret_key: &str) -> ConfigLoader {
        // The proxy's own loader (its HTTP client and timeouts), pointed at the emulator.
        chat_proxy::config::secrets::aws_loader()
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(access_key, secret_key, None, None, "test"))
    }

    pub fn loader(&self) -> ConfigLoader {
        self.loader_as("testing", "testing")
    }

    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.loader().load().await)
    }

    pub async fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.loader().load().await)
    }

    /// Stores a SecureString parameter.
    pub async fn put_parameter(&self, name: &str, value: &str) {
        self.ssm()
            .await
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .expect("put_parameter");
    }

    /// Stores a secret and returns its ARN.
    pub async fn create_secret(&self, name: &str, value: &str) -> String {
        self.secrets_manager()
            .await
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("create_secret")
            .arn
            .expect("an ARN")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy in front of moto that counts the AWS operations it is sent (by `X-Amz-Target`)
/// and answers the first `throttle` of them with SSM's throttling error, as SSM does past
/// its request rate.
pub struct AwsProxy {
    address: std::net::SocketAddr,
    calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl AwsProxy {
    pub async fn start(moto: &MotoServer, throttle: usize) -> AwsProxy {
        use http_body_util::{BodyExt, Full};
        use hyper::service::service_fn;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let throttled = Arc::new(AtomicUsize::new(0));
        let endpoint = moto.endpoint();
        let recorded = calls.clone();
        chat_proxy::install_tls_provider();
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (recorded, throttled, endpoint, http) = (
                    recorded.clone(),
                    throttled.clone(),
                    endpoint.clone(),
                    http.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (recorded, throttled, endpoint, http) = (
                                recorded.clone(),
                                throttled.clone(),
                                endpoint.clone(),
                                http.clone(),
                            );
                            async move {
                                let target = request
                                    .headers()
                                    .get("x-amz-target")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_owned();
                                recorded.lock().unwrap().push(target);
                                if throttled.fetch_add(1, Ordering::SeqCst) < throttle {
                                    let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
                                    return Ok::<_, std::convert::Infallible>(
                                        hyper::Response::builder()
                                            .status(400)
                                            .header("content-type", "application/x-amz-json-1.1")
                                            .header("x-amzn-errortype", "ThrottlingException")
                                            .body(Full::new(bytes::Bytes::from_static(
                                                body.as_bytes(),
                                            )))
                                            .unwrap(),
                                    );
                                }
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let mut forward = http.request(
                                    parts.method.clone(),
                                    format!("{endpoint}{}", parts.uri.path()),
                                );
                                for (name, value) in &parts.headers {
                                    if name != "host" {
                                        forward = forward.header(name, value);
                                    }
                                }
                                let answer = forward.body(body).send().await.unwrap();
                                let mut response =
                                    hyper::Response::builder().status(answer.status());
                                for (name, value) in answer.headers() {
                                    if name != "transfer-encoding" && name != "content-length" {
                                        response = response.header(name, value);
                                    }
                                }
                                let body = answer.bytes().await.unwrap();
                                Ok(response.body(Full::new(body)).unwrap())
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AwsProxy { address, calls }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The operations received so far, e.g. `AmazonSSM.GetParameters`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The proxy's own loader: the proxy's AWS settings pointed at this proxy.
    pub fn loader(&self) -> ConfigLoader {
        chat_proxy::config::secrets::aws_loader()
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
    }
}
