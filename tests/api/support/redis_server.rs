//! A real `redis-server` of one test's own.

use std::time::Duration;

use super::*;

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
        Self::start_free(true)
    }

    /// Starts `redis-server` without persistence: a restart loses everything.
    pub fn start_forgetful() -> RedisServer {
        Self::start_free(false)
    }

    /// Starts `redis-server` on `port`.
    pub fn start_on(port: u16) -> RedisServer {
        Self::start_with(port, true).expect("redis-server exited at once: is the port taken?")
    }

    /// On a free port. A port found free can be taken before the server binds it (another
    /// test's client may get it as its own port): the server exits at once, and starts again
    /// on another port.
    fn start_free(persistent: bool) -> RedisServer {
        for _ in 0..3 {
            if let Some(server) = Self::start_with(free_port(), persistent) {
                return server;
            }
        }
        panic!("redis-server exited at once, three times");
    }

    /// `None` when the server exited before answering.
    fn start_with(port: u16, persistent: bool) -> Option<RedisServer> {
        let dir =
            std::env::temp_dir().join(format!("boardcast-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let server = RedisServer {
            child: std::sync::Mutex::new(None),
            port,
            dir,
            persistent,
        };
        server.spawn().then_some(server)
    }

    /// Starts the process; false when it exited before answering PING.
    fn spawn(&self) -> bool {
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
            let exited = self
                .child
                .lock()
                .expect("lock")
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                return false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        true
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
        assert!(self.spawn(), "redis-server exited at once on restart");
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
