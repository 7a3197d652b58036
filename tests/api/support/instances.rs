//! The real `boardcast` binary as a child process.

use std::time::Duration;

use super::*;

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
            if std::time::Instant::now() >= deadline {
                let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("the instance never logged {text:?}; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its instance id in Redis mode, as it logs it once Redis is reached.
    pub async fn id(&self) -> String {
        let line = self.logged("this is instance ").await;
        line.split("this is instance ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .expect("the instance's id")
            .to_string()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The instance as a [`TestApp`], for its URLs and helpers.
    pub fn app(&self) -> TestApp {
        TestApp {
            port: self.port,
            redis: None,
            data: None,
            packed: false,
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
