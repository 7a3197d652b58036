//! The real server in this process, on port 0, in either mode.

use std::time::Duration;

use boardcast::config::{Config, JwtKey};
use boardcast::startup::Application;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use super::*;

/// A running server.
pub struct TestApp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The Redis it uses in Redis mode, stopped when the last user of it is dropped.
    pub redis: Option<std::sync::Arc<RedisServer>>,
    /// Its `DATA_DIR`, removed when the test ends, when the test did not choose one.
    pub data: Option<std::sync::Arc<tempfile::TempDir>>,
    /// Its test clients speak MessagePack.
    pub packed: bool,
}

/// Which broker backend a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The in-process broker.
    Embedded,
    /// A real `redis-server` of the test's own.
    Redis,
    /// The in-process broker, with clients that speak MessagePack.
    MsgPack,
}

/// Starts the real server in `mode` with `config`; in Redis mode with a Redis of its own, and
/// only once the server reports ready.
pub async fn spawn_app_with_in(mode: Mode, mut config: Config) -> TestApp {
    let redis = match mode {
        Mode::Embedded | Mode::MsgPack => None,
        Mode::Redis => {
            let redis = RedisServer::start();
            config.redis_url = Some(redis.url());
            Some(std::sync::Arc::new(redis))
        }
    };
    let mut app = spawn_app_with(config).await;
    app.redis = redis;
    app.packed = mode == Mode::MsgPack;
    if mode == Mode::Redis {
        app.wait_ready().await;
    }
    app
}

/// Starts the real server in `mode` with the test settings.
pub async fn spawn_app_in(mode: Mode) -> TestApp {
    spawn_app_with_in(mode, test_config()).await
}

/// Settings for tests: a known secret, port 0, one worker.
pub fn test_config() -> Config {
    Config {
        bind: "127.0.0.1:0".parse().expect("address"),
        jwt: JwtKey::Secret(SECRET.to_vec()),
        workers: 1,
        ..Config::default()
    }
}

/// Starts the real server with `config`; with a `DATA_DIR` of its own unless `config` names
/// one.
pub async fn spawn_app_with(mut config: Config) -> TestApp {
    let mut data = None;
    if config.data_dir == Config::default().data_dir {
        let dir = tempfile::tempdir().expect("a temporary directory");
        config.data_dir = dir.path().display().to_string();
        data = Some(std::sync::Arc::new(dir));
    }
    let app = Application::build(config).await.expect("the server starts");
    let port = app.port();
    actix_web::rt::spawn(app.run());
    TestApp {
        port,
        redis: None,
        data,
        packed: false,
    }
}

/// Starts the real server with the test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

impl TestApp {
    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_readyz(200).await;
    }

    /// Waits until `/readyz` answers `status`.
    pub async fn wait_readyz(&self, status: u16) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = reqwest::get(self.url("/readyz")).await {
                if r.status().as_u16() == status {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/readyz never answered {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The WebSocket URL of `board` with `token`.
    pub fn ws_url(&self, board: &str, token: &str) -> String {
        format!("ws://127.0.0.1:{}/ws/{board}?token={token}", self.port)
    }

    /// Connects to `url` in this app's encoding for test clients.
    pub async fn connect(&self, url: &str) -> TestClient {
        if self.packed {
            TestClient::connect_packed(url).await
        } else {
            TestClient::connect(url).await
        }
    }

    /// The HTTP URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Connects `user` to `board` and reads its first frame (the snapshot).
    pub async fn join(&self, board: &str, user: &str) -> (TestClient, Value) {
        self.join_with(board, &token(user)).await
    }

    /// Connects bob, then ann, to `board`, and waits until bob has seen ann arrive: the
    /// starting point of most two-user tests.
    pub async fn bob_then_ann(&self, board: &str) -> (TestClient, TestClient) {
        let (mut bob, _) = self.join(board, "bob").await;
        let (ann, _) = self.join(board, "ann").await;
        assert_eq!(
            bob.next_of("presence.join").await["payload"]["userId"],
            "ann"
        );
        (bob, ann)
    }

    /// Connects `user` to `board` resuming after `last_seq`; the first frame is not read.
    pub async fn resume(&self, board: &str, user: &str, last_seq: u64) -> TestClient {
        self.connect(&format!(
            "{}&last_seq={last_seq}",
            self.ws_url(board, &token(user))
        ))
        .await
    }

    /// Connects with `token` and reads the first frame.
    pub async fn join_with(&self, board: &str, token: &str) -> (TestClient, Value) {
        let mut client = self.connect(&self.ws_url(board, token)).await;
        let first = client.next_frame().await;
        (client, first)
    }

    /// The HTTP status an upgrade request to `url` gets (101 when it succeeds).
    pub async fn upgrade_status(
        &self,
        request: impl tungstenite::client::IntoClientRequest + Unpin,
    ) -> u16 {
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => 101,
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("unexpected upgrade error: {e}"),
        }
    }
}

impl TestApp {
    /// POSTs JSON to `path` with `token`; returns status and body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = reqwest::Client::new().post(self.url(path)).json(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON to `path` with a server token and an `Idempotency-Key`, answered within 15
    /// seconds; returns status and body.
    pub async fn post_with_key(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(server_token())
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(15))
            .json(body)
            .send()
            .await
            .expect("an answer within 15 s");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path` without a token; returns status and body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// GETs `path` with `token`; returns status and body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new().get(self.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// ann creates item `i` on board `b`; bob joins and leaves; ann then sets three values while
/// bob is away. Returns ann's client and the last seq bob saw, to resume from.
pub async fn values_set_while_bob_is_away(app: &TestApp) -> (TestClient, u64) {
    let (mut ann, _) = app.join("b", "ann").await;
    ann.request("item.created", json!({"item":{"id":"i"}}), "0")
        .await;
    let (mut bob, snapshot) = app.join("b", "bob").await;
    let last = snapshot["payload"]["seq"].as_u64().expect("seq");
    bob.leave().await;
    for n in 1..=3 {
        ann.request(
            "value.set",
            json!({"itemId":"i","columnId":"c","value":n}),
            &n.to_string(),
        )
        .await;
    }
    (ann, last)
}
