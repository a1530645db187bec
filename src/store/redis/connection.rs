//! The connection to Redis: fred's client, built once from `REDIS_URL` (or the older
//! `REDIS_HOST` form), connecting in the background, with every command bounded by
//! `REDIS_TIMEOUT_MS`, and the newest connection failure kept to explain a timeout.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::interfaces::{ClientLike, EventInterface, LuaInterface};
use fred::prelude::{Builder, Client, ReconnectPolicy};
use fred::types::config::{
    Config as FredConfig, ServerConfig, TcpConfig, TlsConnector, UnresponsiveConfig,
};
use secrecy::ExposeSecret;

use crate::config::RedisTarget;
use crate::store::StoreError;

/// The client, and what it last failed to connect with.
pub(super) struct Connection {
    pub client: Client,
    /// A Redis Cluster: keys of different hash slots may sit on different nodes.
    pub clustered: bool,
    /// The newest connection failure (refused, TLS, auth), so that a command that times out
    /// while Redis is unreachable can say why.
    last_error: Arc<Mutex<Option<String>>>,
}

impl Connection {
    /// Builds the client and starts connecting in the background, so a cold start does not
    /// wait for Redis and an unreachable Redis answers 503 instead of failing the init.
    ///
    /// `timeout` bounds every command, connect and TLS handshake included: with Redis down a
    /// request fails within it, and fred keeps reconnecting so the next request succeeds as
    /// soon as Redis is back.
    /// `scripts` are loaded into Redis (`SCRIPT LOAD`, on every node of a Cluster) each time
    /// the client connects, so that calling them by their SHA-1 finds them: a turn then pays
    /// no extra round trip for a script the server did not know yet.
    pub fn open(
        target: &RedisTarget,
        timeout: Duration,
        ca_file: Option<&Path>,
        scripts: Vec<String>,
    ) -> Result<Connection, StoreError> {
        let mut config = fred_config(target)?;
        let clustered = config.server.is_clustered();
        if let Some(path) = ca_file {
            config.tls = Some(tls_trusting(path)?.into());
        }
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = timeout;
                connection.internal_command_timeout = timeout;
                // Any command may be sent again on a fresh connection after a cut: reads, and
                // writes, which are all scripts that run twice to the same effect.
                connection.max_command_attempts = 3;
                connection.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
                connection.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(timeout),
                    interval: Duration::from_millis(250),
                };
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = timeout;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 20, 500, 2))
            .build()
            .map_err(|e| StoreError::new(format!("invalid Redis configuration: {e}")))?;
        let last_error = Arc::new(Mutex::new(None));
        let remember = last_error.clone();
        // Event handlers run on their own task; the handles are dropped on purpose, the tasks
        // live as long as the client.
        let _errors = client.on_error(move |(error, server)| {
            let at = server
                .map(|s| format!(" ({}:{})", s.host, s.port))
                .unwrap_or_default();
            tracing::warn!(error = %error, "Redis connection failed{at}");
            if let Ok(mut last) = remember.lock() {
                *last = Some(error.to_string());
            }
            async { Ok(()) }
        });
        let forget = last_error.clone();
        let loader = client.clone();
        let scripts: std::sync::Arc<[String]> = scripts.into();
        // Fires on the first connection too.
        let _reconnects = client.on_reconnect(move |_server| {
            if let Ok(mut last) = forget.lock() {
                *last = None;
            }
            let (loader, scripts) = (loader.clone(), scripts.clone());
            // All at once, so they are pipelined into one round trip: loaded one after
            // another, the first turns after a cold start would race them and pay NOSCRIPT.
            tokio::spawn(async move {
                let loads = scripts.iter().map(|script| {
                    let loader = loader.clone();
                    async move {
                        if clustered {
                            loader.script_load_cluster::<(), _>(script.as_str()).await
                        } else {
                            loader
                                .script_load::<String, _>(script.as_str())
                                .await
                                .map(drop)
                        }
                    }
                });
                let failed = futures_util::future::join_all(loads)
                    .await
                    .into_iter()
                    .find_map(Result::err);
                if let Some(error) = failed {
                    // Calls by SHA-1 fall back to sending the body: slower, not wrong.
                    tracing::warn!(%error, "a script could not be loaded into Redis");
                }
            });
            async { Ok(()) }
        });
        let _connection = client.connect();
        Ok(Connection {
            client,
            clustered,
            last_error,
        })
    }

    /// A failed command's error, with the last connection failure when there was one: a
    /// timeout alone does not say that the certificate was refused.
    pub fn error(&self, error: fred::error::Error) -> StoreError {
        let last = self.last_error.lock().ok().and_then(|last| last.clone());
        match last {
            Some(cause) => {
                StoreError::new(format!("redis: {error} (last connection error: {cause})"))
            }
            None => StoreError::new(format!("redis: {error}")),
        }
    }
}

fn fred_config(target: &RedisTarget) -> Result<FredConfig, StoreError> {
    match target {
        RedisTarget::Url(url) => FredConfig::from_url(url.expose_secret())
            .map_err(|_| StoreError::new("REDIS_URL is not a valid Redis URL")),
        RedisTarget::Parts {
            host,
            port,
            password,
            tls,
        } => {
            let tls = if *tls {
                let connector = TlsConnector::default_rustls()
                    .map_err(|e| StoreError::new(format!("cannot set up TLS for Redis: {e}")))?;
                Some(connector.into())
            } else {
                None
            };
            Ok(FredConfig {
                server: ServerConfig::new_centralized(host.clone(), *port),
                password: password.as_ref().map(|p| p.expose_secret().to_owned()),
                tls,
                ..FredConfig::default()
            })
        }
    }
}

/// A TLS setup that trusts exactly the certificates in the PEM file at `path`.
fn tls_trusting(path: &Path) -> Result<TlsConnector, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let unreadable =
        |e: &dyn std::fmt::Display| StoreError::new(format!("cannot read REDIS_TLS_CA_FILE: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        roots
            .add(certificate.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(StoreError::new("REDIS_TLS_CA_FILE holds no certificate"));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(config))
}
