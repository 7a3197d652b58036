//! Shared test support: the real server on port 0, tokens, and a WebSocket client that waits
//! for conditions with timeouts.
#![allow(dead_code)]

use std::time::Duration;

use boardcast::auth::{now_secs, Claims, Role};
use boardcast::config::{Config, JwtKey};
use boardcast::startup::Application;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret every test server uses.
pub const SECRET: &[u8] = b"test-secret-0123456789abcdef";
/// How long any single expectation may wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server.
pub struct TestApp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The Redis it uses in Redis mode, stopped when the last user of it is dropped.
    pub redis: Option<std::sync::Arc<RedisServer>>,
    /// Its `DATA_DIR`, removed when the test ends, when the test did not choose one.
    pub data: Option<std::sync::Arc<tempfile::TempDir>>,
}

/// Which broker backend a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The in-process broker.
    Embedded,
    /// A real `redis-server` of the test's own.
    Redis,
}

/// Runs one test body in both modes: `name::embedded` and `name::redis`.
#[macro_export]
macro_rules! in_both_modes {
    (async fn $name:ident($mode:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($mode: Mode) $body

            #[actix_web::test]
            async fn embedded() {
                body(Mode::Embedded).await
            }

            #[actix_web::test]
            async fn redis() {
                body(Mode::Redis).await
            }
        }
    };
}

/// Starts the real server in `mode` with `config`; in Redis mode with a Redis of its own, and
/// only once the server reports ready.
pub async fn spawn_app_with_in(mode: Mode, mut config: Config) -> TestApp {
    let redis = match mode {
        Mode::Embedded => None,
        Mode::Redis => {
            let redis = RedisServer::start();
            config.redis_url = Some(redis.url());
            Some(std::sync::Arc::new(redis))
        }
    };
    let mut app = spawn_app_with(config).await;
    app.redis = redis;
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
    }
}

/// Starts the real server with the test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config()).await
}

/// Claims for `sub`, valid for an hour.
pub fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        exp: now_secs() + 3600,
        name: Some(format!("{sub} name")),
        avatar: None,
        tenant: None,
        boards: None,
        role: Role::Editor,
    }
}

/// Signs `claims` with the test secret.
pub fn sign(claims: &Claims) -> String {
    sign_value(&serde_json::to_value(claims).expect("claims serialize"))
}

/// Signs any JSON claims with the test secret.
pub fn sign_value(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("signing works")
}

/// A token for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    sign(&claims(sub))
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
        TestClient::connect(&format!(
            "{}&last_seq={last_seq}",
            self.ws_url(board, &token(user))
        ))
        .await
    }

    /// Connects with `token` and reads the first frame.
    pub async fn join_with(&self, board: &str, token: &str) -> (TestClient, Value) {
        let mut client = TestClient::connect(&self.ws_url(board, token)).await;
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

/// A real WebSocket client.
pub struct TestClient {
    /// The socket.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl TestClient {
    /// Connects to `url`, panicking if the upgrade fails.
    pub async fn connect(url: &str) -> TestClient {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("the upgrade succeeds");
        TestClient { ws }
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send works");
    }

    /// Sends `{"type": kind, "payload": payload}`.
    pub async fn send_type(&mut self, kind: &str, payload: Value) {
        self.send(json!({"type": kind, "payload": payload})).await;
    }

    /// The next text frame as JSON; panics on close or after [`WAIT`].
    pub async fn next_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a valid frame");
            match msg {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON frame"),
                Message::Close(frame) => panic!("closed while waiting for a frame: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame of type `kind`, skipping cursor moves and typing of others; panics on
    /// any other frame type, so nothing unexpected slips by.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == kind {
                return frame;
            }
            let t = frame["type"].as_str().unwrap_or_default();
            assert!(
                t == "cursor.move" || t.starts_with("typing."),
                "expected {kind}, got {frame}"
            );
        }
    }

    /// Closes the socket and waits for the server's answer.
    pub async fn leave(&mut self) {
        self.ws.close(None).await.expect("close");
        self.expect_close().await;
    }

    /// Reads until the server closes; returns the close code (1006 when the socket just ended).
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a close in time");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return 1006,
            }
        }
    }
}

/// A token with role `server` for the HTTP API.
pub fn server_token() -> String {
    let mut c = claims("backend");
    c.role = Role::Server;
    sign(&c)
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

impl TestClient {
    /// Sends a durable operation with `id` and returns the answer to it (ack or error),
    /// skipping anything else.
    pub async fn request(&mut self, kind: &str, payload: Value, id: &str) -> Value {
        self.send(json!({"type": kind, "payload": payload, "id": id}))
            .await;
        loop {
            let frame = self.next_frame().await;
            if (frame["type"] == "ack" || frame["type"] == "error") && frame["payload"]["id"] == id
            {
                return frame;
            }
        }
    }

    /// The next frame carrying a `seq` (durable events; acks count via their payload).
    pub async fn next_sequenced(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame.get("seq").is_some() {
                return frame;
            }
        }
    }
}

/// The real `boardcast` binary running as a child process.
pub struct Instance {
    /// The process.
    pub child: std::process::Child,
    /// The port it bound.
    pub port: u16,
    /// Every line it logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its `DATA_DIR`, removed when it is dropped, when the test did not choose one.
    pub data: Option<tempfile::TempDir>,
}

impl Instance {
    /// Starts the binary with the test secret, port 0 and `env`; waits until it listens.
    pub fn start(env: &[(&str, &str)]) -> Instance {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"));
        command.env(
            "JWT_SECRET",
            std::str::from_utf8(SECRET).expect("utf-8 secret"),
        );
        Self::spawn(command, env)
    }

    /// Starts the binary with no key at all (dev mode), port 0 and `env`.
    pub fn start_in_dev_mode(env: &[(&str, &str)]) -> Instance {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"));
        command.env_remove("JWT_SECRET");
        Self::spawn(command, env)
    }

    fn spawn(mut command: std::process::Command, env: &[(&str, &str)]) -> Instance {
        use std::io::BufRead;
        let mut data = None;
        if !env.iter().any(|(k, _)| *k == "DATA_DIR") {
            let dir = tempfile::tempdir().expect("a temporary directory");
            command.env("DATA_DIR", dir.path());
            data = Some(dir);
        }
        let mut child = spawn_logging(&mut command, env);
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            // Keeps draining the log so the child never blocks on it.
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(port) = line.split("listening on port ").nth(1) {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
                if std::env::var_os("BOARDCAST_TEST_LOG").is_some() {
                    eprintln!("[instance] {line}");
                }
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        });
        let port = rx
            .recv_timeout(WAIT)
            .ok()
            .flatten()
            .expect("the instance reports its port");
        Instance {
            child,
            port,
            log,
            data,
        }
    }

    /// Waits until a line of its log contains `text`; the line.
    pub async fn logged(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let found = self
                .log
                .lock()
                .ok()
                .and_then(|lines| lines.iter().find(|l| l.contains(text)).cloned());
            if let Some(line) = found {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the instance never logged {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The instance as a [`TestApp`], for its URLs and helpers.
    pub fn app(&self) -> TestApp {
        TestApp {
            port: self.port,
            redis: None,
            data: None,
        }
    }

    /// Sends a signal (`TERM`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit; its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the instance did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Spawns `command` on port 0 with `env`, its log (stderr) piped.
fn spawn_logging(command: &mut std::process::Command, env: &[(&str, &str)]) -> std::process::Child {
    command
        .env("BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

/// Runs the binary with the test secret and `env`, expecting it to refuse to start: its exit
/// status and what it logged.
pub fn start_refused(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"));
    command.env(
        "JWT_SECRET",
        std::str::from_utf8(SECRET).expect("utf-8 secret"),
    );
    let mut child = spawn_logging(&mut command, env);
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the instance started when it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut log);
    }
    (status, log)
}

/// Runs `boardcast` with `args` and `env` to its end: whether it succeeded, and its stderr.
pub fn run_tool(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real `redis-server` of one test's own, on a free port, in a directory of its own.
pub struct RedisServer {
    /// The process, replaced on restart.
    child: std::sync::Mutex<Option<std::process::Child>>,
    /// Its port.
    pub port: u16,
    /// Its working directory (append-only file), removed on drop.
    dir: std::path::PathBuf,
    /// Whether it keeps an append-only file.
    persistent: bool,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// Starts `redis-server` (persistence on, so a restart keeps the data) and waits for PING.
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    /// Starts `redis-server` without persistence: a restart loses everything.
    pub fn start_forgetful() -> RedisServer {
        Self::start_with(free_port(), false)
    }

    /// Starts `redis-server` on `port`.
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, true)
    }

    fn start_with(port: u16, persistent: bool) -> RedisServer {
        let dir =
            std::env::temp_dir().join(format!("boardcast-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let server = RedisServer {
            child: std::sync::Mutex::new(None),
            port,
            dir,
            persistent,
        };
        server.spawn();
        server
    }

    fn spawn(&self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (the test command installs it)");
        *self.child.lock().expect("lock") = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while !self.answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers PING.
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut buf).is_ok()
            && &buf == b"+PONG\r\n"
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it (SIGTERM: it writes its data and exits) and waits for the exit.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// A plain connection to it, for tests that look into Redis or change it by hand.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a connection to the test's redis")
    }

    /// The process id, to send it signals (`STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let guard = self.child.lock().expect("lock");
        let child = guard.as_ref().expect("redis runs");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&self) {
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.child.lock() {
            if let Some(mut child) = guard.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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
