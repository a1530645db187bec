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
        chat_proxy::secrets::aws_loader()
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
