//! The test harness: a real Redis, a fake OpenAI, and the proxy's `App` built over them the
//! way `main` builds it, driven with synthetic `lambda_http` requests.

#![allow(dead_code)]

pub mod http;
pub mod moto;
pub mod openai;
pub mod redis;
pub mod relay;
pub mod runtime_api;
pub mod streaming;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chat_proxy::http::ResponseBody;
use chat_proxy::store::RedisStore;
use chat_proxy::{handle, App, Config};
use lambda_http::http::{HeaderMap, Method};
use lambda_http::{Body, Request};
use serde_json::Value;

use self::openai::{FakeOpenAi, API_KEY};
use self::redis::{RedisCluster, RedisServer};
use self::relay::Relay;

pub struct TestApp {
    /// Leaked, as `main` does: an HTTP server or a streamed turn may outlive a borrow.
    pub app: &'static App,
    pub config: Config,
    pub store: Arc<RedisStore>,
    /// The Redis server; for a cluster app, its first node.
    pub redis: RedisServer,
    /// The other nodes of a cluster app.
    pub cluster: Option<RedisCluster>,
    /// The relay between the app and Redis, for an app made with `over_relay`.
    pub relay: Option<Relay>,
    pub openai: FakeOpenAi,
}

/// What the proxy answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The server-sent events of a streamed answer, in order.
    pub fn events(&self) -> Vec<SseEvent> {
        parse_events(&self.text)
    }

    /// Asserts an error in OpenAI's shape with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(body["error"]["type"].is_string());
    }
}

/// The environment the proxy gets in tests, plus `extra`.
pub fn config_for(redis_url: &str, openai_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("GPT_API_KEY", API_KEY),
        ("OPENAI_BASE_URL", openai_url),
        ("REDIS_URL", redis_url),
        ("OPENAI_TIMEOUT_SECONDS", "10"),
        ("REDIS_TIMEOUT_MS", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|name| vars.get(name).cloned()).expect("test configuration is valid")
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::with_env(&[]).await
    }

    /// Starts Redis and the fake OpenAI, and builds the app with `extra` settings.
    pub async fn with_env(extra: &[(&str, &str)]) -> TestApp {
        let redis = RedisServer::start();
        let url = redis.url();
        TestApp::over(redis, None, &url, extra).await
    }

    /// The app talking to Redis through a [`Relay`], to delay or cut the link.
    pub async fn over_relay(extra: &[(&str, &str)]) -> TestApp {
        let redis = RedisServer::start();
        let relay = Relay::start(([127, 0, 0, 1], redis.port()).into()).await;
        let url = format!("redis://127.0.0.1:{}", relay.port());
        let mut t = TestApp::over(redis, None, &url, extra).await;
        t.relay = Some(relay);
        t
    }

    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("an app made with over_relay")
    }

    /// The app over a TLS-only Redis, trusting the CA that signed its certificate.
    pub async fn over_tls(extra: &[(&str, &str)]) -> TestApp {
        let redis = RedisServer::start_tls();
        let url = redis.url();
        let ca = redis.tls().ca.to_string_lossy().into_owned();
        let mut settings = vec![("REDIS_TLS_CA_FILE", ca.as_str())];
        settings.extend_from_slice(extra);
        TestApp::over(redis, None, &url, &settings).await
    }

    /// The app over a three-node Redis Cluster.
    pub async fn over_cluster(extra: &[(&str, &str)]) -> TestApp {
        let mut cluster = RedisCluster::start();
        let url = cluster.url();
        let first = cluster.nodes.remove(0);
        TestApp::over(first, Some(cluster), &url, extra).await
    }

    async fn over(
        redis: RedisServer,
        cluster: Option<RedisCluster>,
        url: &str,
        extra: &[(&str, &str)],
    ) -> TestApp {
        let openai = FakeOpenAi::start().await;
        let config = config_for(url, &openai.base_url(), extra);
        let target = config.redis.clone().expect("Redis is configured");
        let store = Arc::new(
            RedisStore::connect(
                &target,
                config.store.clone(),
                config.redis_timeout,
                config.redis_ca_file.as_deref(),
            )
            .expect("Redis client")
            .sealed(config.seal_keys.clone()),
        );
        assert!(
            store.wait_connected(Duration::from_secs(5)).await,
            "Redis connects"
        );
        let app = Box::leak(Box::new(
            App::with_store(&config, store.clone()).expect("app builds"),
        ));
        TestApp {
            app,
            config,
            store,
            redis,
            cluster,
            relay: None,
            openai,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Body) -> Reply {
        self.call_with(method, path, body, &[]).await
    }

    /// A request with extra headers, e.g. `("authorization", "Bearer ...")`.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = lambda_http::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(body).expect("a valid request"))
            .await
    }

    /// Sends a request and reads its whole answer, streamed or not.
    pub async fn send(&self, request: Request) -> Reply {
        send_to(self.app, request).await
    }

    /// Another instance of the function over the same Redis and fake OpenAI, with the same
    /// settings, as Lambda runs several at once.
    pub fn another_instance(&self) -> &'static App {
        Box::leak(Box::new(
            App::build(&self.config).expect("a second instance builds"),
        ))
    }

    /// Another instance with other `SEAL_KEYS` (`None`: none), as after a restart with the
    /// keys changed.
    pub fn instance_sealed_with(&self, keys: Option<&str>) -> &'static App {
        let mut config = self.config.clone();
        config.seal_keys = keys.map(|keys| {
            Arc::new(chat_proxy::seal::SealKeys::parse(keys).expect("valid SEAL_KEYS"))
        });
        Box::leak(Box::new(App::build(&config).expect("an instance builds")))
    }

    /// The Redis store of `instance_sealed_with(keys)`, connected.
    pub async fn store_sealed_with(&self, keys: &str) -> RedisStore {
        let config = &self.config;
        let seal = chat_proxy::seal::SealKeys::parse(keys).expect("valid SEAL_KEYS");
        let store = RedisStore::connect(
            config.redis.as_ref().expect("Redis is configured"),
            config.store.clone(),
            config.redis_timeout,
            config.redis_ca_file.as_deref(),
        )
        .expect("Redis client")
        .sealed(Some(Arc::new(seal)));
        assert!(
            store.wait_connected(Duration::from_secs(5)).await,
            "Redis connects"
        );
        store
    }

    /// Sends a request and returns the response as it starts, to read its body over time.
    pub async fn open(&self, request: Request) -> lambda_http::Response<ResponseBody> {
        handle(self.app, request).await
    }
}

/// Sends a request to `app` and reads its whole answer, streamed or not.
pub async fn send_to(app: &App, request: Request) -> Reply {
    let response = handle(app, request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.next().await {
        bytes.extend_from_slice(&frame);
    }
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

impl TestApp {
    /// The app behind a real HTTP server, for real HTTP clients; its base URL.
    pub async fn http_url(&self) -> String {
        format!("http://{}", http::serve(self.app).await)
    }

    /// A POST with a JSON body and extra headers, for `open`.
    pub fn request(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Request {
        let mut builder = lambda_http::http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/json");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Body::from(body.to_string()))
            .expect("a valid request")
    }

    /// A GET, for `send_to` another instance.
    pub fn get_request(&self, path: &str) -> Request {
        lambda_http::http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(Body::Empty)
            .expect("a valid request")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Body::Empty).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Body::from(body.to_string()))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<Body>) -> Reply {
        self.call(Method::POST, path, body.into()).await
    }

    /// Sends a chat message and asserts it was answered.
    pub async fn say(&self, chat: &str, content: &str) -> Value {
        let reply = self
            .post(
                &format!("/{chat}/chat"),
                serde_json::json!({ "content": content }),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()
    }

    /// The chat's transcript from `GET /<chat>/chat`.
    pub async fn transcript(&self, chat: &str) -> Value {
        let reply = self.get(&format!("/{chat}/chat")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json()
    }

    /// Every key stored in Redis, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .redis
            .query(&["KEYS", "*"])
            .lines()
            .map(str::to_owned)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }

    /// Waits until the streamed seed turns made so far have ended their live records: a
    /// stream's last event goes to its client before its record's end is written beside.
    pub async fn live_turns_ended(&self) {
        for _ in 0..250 {
            let runs: Vec<String> = self
                .keys()
                .into_iter()
                .filter(|key| key.contains(":run:") && !key.ends_with(":events"))
                .collect();
            let ended = runs.iter().all(|run| {
                let status = self.redis.query(&["HGET", run, "status"]);
                !status.is_empty() && status != "in_progress"
            });
            if !runs.is_empty() && ended {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("a live turn's record did not end: {:?}", self.keys());
    }

    /// Every key, on every node of a cluster too.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys = self.keys();
        if let Some(cluster) = &self.cluster {
            keys.extend(cluster.keys());
            keys.sort();
        }
        keys
    }

    /// A snapshot of everything stored, to show a failed request changed nothing.
    pub fn dump(&self) -> Vec<(String, String)> {
        self.keys()
            .into_iter()
            .map(|key| {
                let value = match self.redis.query(&["TYPE", &key]).as_str() {
                    "list" => self.redis.query(&["LRANGE", &key, "0", "-1"]),
                    // By field: a hash's order is Redis's, and may change as it grows.
                    "hash" => {
                        let flat = self.redis.query(&["HGETALL", &key]);
                        let lines: Vec<&str> = flat.lines().collect();
                        let mut pairs: Vec<String> =
                            lines.chunks(2).map(|pair| pair.join("\n")).collect();
                        pairs.sort();
                        pairs.join("\n")
                    }
                    "zset" => self.redis.query(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
                    "set" => {
                        let mut members: Vec<String> = self
                            .redis
                            .query(&["SMEMBERS", &key])
                            .lines()
                            .map(str::to_owned)
                            .collect();
                        members.sort();
                        members.join("\n")
                    }
                    _ => self.redis.query(&["GET", &key]),
                };
                (key, value)
            })
            .collect()
    }
}

/// One server-sent event, or a comment line.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `event:`'s value; `None` for a bare `data:` event, `Some(":")` for a comment.
    pub event: Option<String>,
    pub data: String,
    /// `id:`'s value, when the event has one.
    pub id: Option<String>,
}

impl SseEvent {
    pub fn is_comment(&self) -> bool {
        self.event.as_deref() == Some(":")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Splits an event stream into its events (blank-line separated blocks).
pub fn parse_events(text: &str) -> Vec<SseEvent> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = SseEvent {
                event: None,
                data: String::new(),
                id: None,
            };
            for line in block.lines() {
                if let Some(comment) = line.strip_prefix(':') {
                    event.event = Some(":".to_owned());
                    event.data = comment.trim().to_owned();
                } else if let Some(name) = line.strip_prefix("event: ") {
                    event.event = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data.push_str(data);
                } else if let Some(id) = line.strip_prefix("id: ") {
                    event.id = Some(id.to_owned());
                }
            }
            event
        })
        .collect()
}

/// Reads a streamed body event by event, as a client would, noting when each arrived.
pub struct EventReader {
    body: ResponseBody,
    pending: String,
    started: std::time::Instant,
}

impl EventReader {
    pub fn new(body: ResponseBody) -> EventReader {
        EventReader {
            body,
            pending: String::new(),
            started: std::time::Instant::now(),
        }
    }

    /// The next event and when it arrived since the reader was made; `None` at the end.
    pub async fn next(&mut self) -> Option<(std::time::Duration, SseEvent)> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let event = parse_events(&block).pop()?;
                return Some((self.started.elapsed(), event));
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .expect("the stream moved on within 20 s")?;
            self.pending.push_str(&String::from_utf8_lossy(&frame));
        }
    }

    /// Every remaining event.
    pub async fn rest(&mut self) -> Vec<(std::time::Duration, SseEvent)> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}
