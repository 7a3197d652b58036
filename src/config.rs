//! Configuration from the environment.
//!
//! Every setting has a default that runs, so `cargo run` needs no setup. A bad value stops
//! start-up with a [`ConfigError`] that names the variable and what it expected. One file:
//! the settings, their defaults and their parsing are one table read top to bottom, and a
//! quarter of it is the tests of the values refused.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::backend::embedded::sqlite::SyncMode;

/// A setting that could not be read: which variable, what it held, what it should hold.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// The value it held.
    pub value: String,
    /// A description of the accepted values.
    pub expected: &'static str,
}

/// How the instance verifies tokens.
#[derive(Clone, Debug)]
pub enum JwtKey {
    /// HS256 with a shared secret from `JWT_SECRET`.
    Secret(Vec<u8>),
    /// Dev mode: a random secret made at start-up, with `/dev/token` enabled.
    Dev(Vec<u8>),
    /// RS256 or ES256 with a PEM public key from `JWT_PUBLIC_KEY`.
    PublicKey {
        /// `RS256` or `ES256`: the only algorithm accepted.
        algorithm: jsonwebtoken::Algorithm,
        /// The PEM text of the public key.
        pem: Vec<u8>,
    },
}

impl JwtKey {
    /// Whether this instance issues dev tokens.
    pub fn is_dev(&self) -> bool {
        matches!(self, JwtKey::Dev(_))
    }
}

/// Every setting of an instance, read once at start-up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (`BIND`); port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// `REDIS_URL`; `None` runs the embedded single-instance broker.
    pub redis_url: Option<String>,
    /// `REDIS_CLUSTER`: `REDIS_URL` lists seed nodes of a Redis Cluster.
    pub redis_cluster: bool,
    /// `REDIS_PREFIX`: the first part of every Redis key and channel name.
    pub redis_prefix: String,
    /// `REDIS_PUSH_BACKLOG`: Redis messages that may wait for the broker; past it they are
    /// dropped and every room resyncs once the broker caught up.
    pub redis_push_backlog: usize,
    /// `REDIS_PUBLISH_BACKLOG`: ephemeral events that may wait to be published to Redis;
    /// past it they are dropped.
    pub redis_publish_backlog: usize,
    /// Token verification key (`JWT_SECRET`, `JWT_PUBLIC_KEY`, `JWT_ALGORITHM`).
    pub jwt: JwtKey,
    /// `ALLOWED_ORIGINS`: when set, a WebSocket `Origin` must be one of these.
    pub allowed_origins: Option<HashSet<String>>,
    /// `REPLAY_EVENTS`: durable events retained per board for resume.
    pub replay_events: usize,
    /// `MAX_MESSAGE_BYTES`: largest accepted frame or request body.
    pub max_message_bytes: usize,
    /// `HEARTBEAT_INTERVAL`: how often the server pings each session.
    pub heartbeat_interval: Duration,
    /// `CLIENT_TIMEOUT`: a session silent for this long is ended.
    pub client_timeout: Duration,
    /// `RATE_LIMIT`: frames per second a session may send on average.
    pub rate_per_sec: f64,
    /// `RATE_BURST`: frames a session may send at once.
    pub rate_burst: f64,
    /// `SESSION_QUEUE`: outbound messages queued for one session before it counts as slow.
    pub session_queue: usize,
    /// `MAX_ITEMS`: items one board may hold.
    pub max_items: usize,
    /// `MAX_ITEM_BYTES`: bytes one item may hold, its values included.
    pub max_item_bytes: usize,
    /// `MAX_BOARD_BYTES`: bytes one board's items and values may hold together.
    pub max_board_bytes: usize,
    /// `REPLAY_BYTES`: bytes of event frames retained per board for resume.
    pub replay_bytes: usize,
    /// `MAX_SESSIONS_PER_USER`: sessions one user may hold on this instance.
    pub max_sessions_per_user: usize,
    /// `WRITE_TIMEOUT`: how long a write to a client may wait before the socket is dropped.
    pub write_timeout: Duration,
    /// `JWT_AUDIENCE`: when set, tokens must name it in `aud`.
    pub jwt_audience: Option<String>,
    /// `JWT_ISSUER`: when set, tokens must carry it as `iss`.
    pub jwt_issuer: Option<String>,
    /// `DEMO`: serve the demo board at `/`.
    pub demo: bool,
    /// `WORKERS`: HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// `DATA_DIR`: where the embedded mode keeps its database; `:memory:` keeps nothing.
    pub data_dir: String,
    /// `SYNC`: when a commit of the embedded mode is on disk.
    pub sync: SyncMode,
    /// `WEBHOOK_URL` and `WEBHOOK_SECRET`: where board events are posted, signed.
    pub webhook: Option<WebhookConfig>,
}

/// Where the webhooks go and the secret that signs them.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `WEBHOOK_URL`: an `http://` or `https://` URL.
    pub url: String,
    /// `WEBHOOK_SECRET`: the HMAC-SHA256 key, at least 16 bytes.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"(hidden)")
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: None,
            redis_cluster: false,
            redis_prefix: "bc".into(),
            redis_push_backlog: 100_000,
            redis_publish_backlog: 20_000,
            jwt: JwtKey::Dev(random_secret()),
            allowed_origins: None,
            replay_events: 10_000,
            max_message_bytes: 65_536,
            heartbeat_interval: Duration::from_secs(25),
            client_timeout: Duration::from_secs(60),
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            session_queue: 256,
            max_items: 10_000,
            max_item_bytes: 16 * 1024,
            max_board_bytes: 8 * 1024 * 1024,
            replay_bytes: 16 * 1024 * 1024,
            max_sessions_per_user: 32,
            write_timeout: Duration::from_secs(10),
            jwt_audience: None,
            jwt_issuer: None,
            demo: true,
            workers: 0,
            data_dir: "data".into(),
            sync: SyncMode::Normal,
            webhook: None,
        }
    }
}

fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
    secret
}

impl Config {
    /// How often each session looks at its heartbeat and its client's silence: the heartbeat
    /// interval, or a quarter of the client timeout when that is sooner (10 ms at least).
    pub fn heartbeat_tick(&self) -> Duration {
        self.heartbeat_interval
            .min(self.client_timeout / 4)
            .max(Duration::from_millis(10))
    }

    /// The bounds of every board, from `MAX_ITEMS`, `MAX_ITEM_BYTES`, `MAX_BOARD_BYTES`,
    /// `REPLAY_EVENTS` and `REPLAY_BYTES`.
    pub fn board_limits(&self) -> crate::board::BoardLimits {
        crate::board::BoardLimits {
            max_items: self.max_items,
            max_item_bytes: self.max_item_bytes,
            max_board_bytes: self.max_board_bytes,
            replay_events: self.replay_events,
            replay_bytes: self.replay_bytes,
        }
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Config::default();
        if let Some(v) = get("BIND") {
            config.bind = v.trim().parse().map_err(|_| ConfigError {
                var: "BIND",
                value: v.clone(),
                expected: "an address and port such as 127.0.0.1:8080",
            })?;
        }
        config.redis_url = get("REDIS_URL");
        if let Some(v) = get("REDIS_CLUSTER") {
            config.redis_cluster = on_off(v, "REDIS_CLUSTER")?;
        }
        if let Some(url) = &config.redis_url {
            let urls: Vec<&str> = if config.redis_cluster {
                url.split(',').map(str::trim).collect()
            } else {
                vec![url.as_str()]
            };
            if urls
                .iter()
                .any(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
            {
                return Err(ConfigError {
                    var: "REDIS_URL",
                    value: url.clone(),
                    expected: if config.redis_cluster {
                        "URLs starting with redis:// or rediss://, separated by commas"
                    } else {
                        "a URL starting with redis:// or rediss://"
                    },
                });
            }
        } else if config.redis_cluster {
            return Err(ConfigError {
                var: "REDIS_URL",
                value: String::new(),
                expected: "the cluster's seed nodes, since REDIS_CLUSTER is on",
            });
        }
        if let Some(v) = get("REDIS_PREFIX") {
            config.redis_prefix = v.trim().to_string();
        }
        if let Some(v) = get("REDIS_PUSH_BACKLOG") {
            config.redis_push_backlog = positive(&v, "REDIS_PUSH_BACKLOG")?;
        }
        if let Some(v) = get("REDIS_PUBLISH_BACKLOG") {
            config.redis_publish_backlog = positive(&v, "REDIS_PUBLISH_BACKLOG")?;
        }
        config.jwt = jwt_from(&lookup, &get)?;
        config.jwt_audience = get("JWT_AUDIENCE").map(|v| v.trim().to_string());
        config.jwt_issuer = get("JWT_ISSUER").map(|v| v.trim().to_string());
        dev_mode_allowed(&config, get("DEV_MODE"))?;
        if let Some(v) = get("ALLOWED_ORIGINS") {
            let origins: HashSet<String> = v
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect();
            config.allowed_origins = Some(origins);
        }
        if let Some(v) = get("REPLAY_EVENTS") {
            config.replay_events = positive(&v, "REPLAY_EVENTS")?;
        }
        if let Some(v) = get("MAX_MESSAGE_BYTES") {
            config.max_message_bytes = positive(&v, "MAX_MESSAGE_BYTES")?;
        }
        if let Some(v) = get("HEARTBEAT_INTERVAL") {
            config.heartbeat_interval = duration(&v, "HEARTBEAT_INTERVAL")?;
        }
        if let Some(v) = get("CLIENT_TIMEOUT") {
            config.client_timeout = duration(&v, "CLIENT_TIMEOUT")?;
        }
        if let Some(v) = get("RATE_LIMIT") {
            config.rate_per_sec = positive::<u32>(&v, "RATE_LIMIT")? as f64;
        }
        if let Some(v) = get("RATE_BURST") {
            config.rate_burst = positive::<u32>(&v, "RATE_BURST")? as f64;
        }
        if let Some(v) = get("SESSION_QUEUE") {
            config.session_queue = positive(&v, "SESSION_QUEUE")?;
        }
        if let Some(v) = get("MAX_ITEMS") {
            config.max_items = positive(&v, "MAX_ITEMS")?;
        }
        if let Some(v) = get("MAX_ITEM_BYTES") {
            config.max_item_bytes = positive(&v, "MAX_ITEM_BYTES")?;
        }
        if let Some(v) = get("MAX_BOARD_BYTES") {
            config.max_board_bytes = positive(&v, "MAX_BOARD_BYTES")?;
        }
        if let Some(v) = get("REPLAY_BYTES") {
            config.replay_bytes = positive(&v, "REPLAY_BYTES")?;
        }
        if let Some(v) = get("MAX_SESSIONS_PER_USER") {
            config.max_sessions_per_user = positive(&v, "MAX_SESSIONS_PER_USER")?;
        }
        if let Some(v) = get("WRITE_TIMEOUT") {
            config.write_timeout = duration(&v, "WRITE_TIMEOUT")?;
        }
        if let Some(v) = get("DEMO") {
            config.demo = on_off(v, "DEMO")?;
        }
        if let Some(v) = get("WORKERS") {
            config.workers = v.trim().parse().map_err(|_| ConfigError {
                var: "WORKERS",
                value: v.clone(),
                expected: "a whole number (0: one per core)",
            })?;
        }
        if let Some(v) = get("DATA_DIR") {
            config.data_dir = v.trim().to_string();
        }
        if let Some(v) = get("SYNC") {
            config.sync = match v.trim().to_ascii_lowercase().as_str() {
                "normal" => SyncMode::Normal,
                "full" => SyncMode::Full,
                _ => {
                    return Err(ConfigError {
                        var: "SYNC",
                        value: v,
                        expected: "normal or full",
                    })
                }
            };
        }
        config.webhook = webhook_from(&lookup, &get)?;
        Ok(config)
    }
}

/// `WEBHOOK_URL` with its required `WEBHOOK_SECRET`; neither is needed without the other, but
/// a secret alone is refused too (it says webhooks were meant, and they would not run).
fn webhook_from(
    raw: &impl Fn(&str) -> Option<String>,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<WebhookConfig>, ConfigError> {
    let secret = raw("WEBHOOK_SECRET");
    let Some(url) = get("WEBHOOK_URL") else {
        if secret.is_some() {
            return Err(ConfigError {
                var: "WEBHOOK_URL",
                value: String::new(),
                expected: "a URL when WEBHOOK_SECRET is set",
            });
        }
        return Ok(None);
    };
    let url = url.trim().to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError {
            var: "WEBHOOK_URL",
            value: url,
            expected: "a URL starting with http:// or https://",
        });
    }
    match secret {
        Some(secret) if secret.len() >= MIN_SECRET_BYTES && !secret.trim().is_empty() => {
            Ok(Some(WebhookConfig {
                url,
                secret: secret.into_bytes(),
            }))
        }
        _ => Err(ConfigError {
            var: "WEBHOOK_SECRET",
            value: "(hidden)".into(),
            expected: "a secret of 16 bytes or more (required with WEBHOOK_URL)",
        }),
    }
}

/// Shortest `JWT_SECRET` accepted, in bytes.
const MIN_SECRET_BYTES: usize = 16;

/// The key from `JWT_PUBLIC_KEY` or `JWT_SECRET`. `raw` sees values as they are: a secret that
/// is set but blank is an error, never dev mode.
fn jwt_from(
    raw: &impl Fn(&str) -> Option<String>,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<JwtKey, ConfigError> {
    if let Some(path) = get("JWT_PUBLIC_KEY") {
        let alg = get("JWT_ALGORITHM").unwrap_or_else(|| "RS256".into());
        let algorithm = match alg.trim() {
            "RS256" => jsonwebtoken::Algorithm::RS256,
            "ES256" => jsonwebtoken::Algorithm::ES256,
            _ => {
                return Err(ConfigError {
                    var: "JWT_ALGORITHM",
                    value: alg,
                    expected: "RS256 or ES256 (with JWT_PUBLIC_KEY)",
                })
            }
        };
        let pem = std::fs::read(path.trim()).map_err(|_| ConfigError {
            var: "JWT_PUBLIC_KEY",
            value: path.clone(),
            expected: "the path of a readable PEM public key file",
        })?;
        return Ok(JwtKey::PublicKey { algorithm, pem });
    }
    match raw("JWT_SECRET") {
        Some(secret) if secret.trim().len() < MIN_SECRET_BYTES => Err(ConfigError {
            var: "JWT_SECRET",
            value: "(hidden)".into(),
            expected:
                "a secret of at least 16 bytes that are not all blank (unset it for dev mode)",
        }),
        Some(secret) => Ok(JwtKey::Secret(secret.into_bytes())),
        None => Ok(JwtKey::Dev(random_secret())),
    }
}

/// A switch: on or off.
fn on_off(value: String, var: &'static str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError {
            var,
            value,
            expected: "on or off",
        }),
    }
}

/// Dev mode hands out tokens to anyone who asks, so it runs on a loopback address only, unless
/// `DEV_MODE=on` says the operator means it; `DEV_MODE=off` requires a key.
fn dev_mode_allowed(config: &Config, dev_mode: Option<String>) -> Result<(), ConfigError> {
    let setting = dev_mode.as_deref().map(|v| v.trim().to_ascii_lowercase());
    let explicit = match setting.as_deref() {
        None => None,
        Some("on" | "true" | "1" | "yes") => Some(true),
        Some("off" | "false" | "0" | "no") => Some(false),
        Some(_) => {
            return Err(ConfigError {
                var: "DEV_MODE",
                value: dev_mode.unwrap_or_default(),
                expected: "on or off",
            })
        }
    };
    if !config.jwt.is_dev() {
        return Ok(());
    }
    match explicit {
        Some(true) => Ok(()),
        Some(false) => Err(ConfigError {
            var: "JWT_SECRET",
            value: String::new(),
            expected: "a secret of at least 16 bytes (or JWT_PUBLIC_KEY): DEV_MODE=off",
        }),
        None if config.bind.ip().is_loopback() => Ok(()),
        None => Err(ConfigError {
            var: "JWT_SECRET",
            value: String::new(),
            expected: "a secret when BIND is not a loopback address: without one the service \
                       runs in dev mode and hands out tokens to anyone (DEV_MODE=on allows it)",
        }),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    v: &str,
    var: &'static str,
) -> Result<T, ConfigError> {
    match v.trim().parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(ConfigError {
            var,
            value: v.to_string(),
            expected: "a whole number above 0",
        }),
    }
}

/// Parses `25`, `25s`, `1.5s` or `500ms`; a bare number is seconds.
fn duration(v: &str, var: &'static str) -> Result<Duration, ConfigError> {
    let t = v.trim();
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1.0)
    } else {
        (t, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * scale < 1.0e6 => {
            Ok(Duration::from_secs_f64(n * scale))
        }
        _ => Err(ConfigError {
            var,
            value: v.to_string(),
            expected: "a duration above 0 such as 25, 25s or 500ms",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn a_redis_cluster_takes_seed_nodes() {
        let seeds = "redis://10.0.0.1:7000, redis://10.0.0.2:7000";
        let config = with(&[("REDIS_URL", seeds), ("REDIS_CLUSTER", "on")]).expect("a cluster");
        assert!(config.redis_cluster);
        assert_eq!(config.redis_url.as_deref(), Some(seeds));
        assert!(
            !with(&[("REDIS_URL", "redis://r")])
                .expect("one redis")
                .redis_cluster
        );
        for (pairs, var) in [
            (vec![("REDIS_CLUSTER", "on")], "REDIS_URL"),
            (
                vec![("REDIS_URL", "redis://a,10.0.0.2"), ("REDIS_CLUSTER", "on")],
                "REDIS_URL",
            ),
            (
                vec![("REDIS_URL", "redis://a"), ("REDIS_CLUSTER", "sometimes")],
                "REDIS_CLUSTER",
            ),
        ] {
            let err = with(&pairs).expect_err("refused");
            assert_eq!(err.var, var, "{pairs:?}");
        }
    }

    #[test]
    fn a_webhook_url_needs_a_secret_and_a_secret_needs_a_url() {
        let secret = "0123456789abcdef";
        let config = with(&[
            ("WEBHOOK_URL", "http://app/hooks"),
            ("WEBHOOK_SECRET", secret),
        ])
        .expect("a webhook");
        let webhook = config.webhook.expect("configured");
        assert_eq!(webhook.url, "http://app/hooks");
        assert_eq!(webhook.secret, secret.as_bytes());
        assert!(
            !format!("{webhook:?}").contains(secret),
            "the secret is never shown"
        );
        assert!(with(&[]).expect("no webhook").webhook.is_none());
        for (pairs, var) in [
            (vec![("WEBHOOK_URL", "http://app/hooks")], "WEBHOOK_SECRET"),
            (
                vec![
                    ("WEBHOOK_URL", "http://app/hooks"),
                    ("WEBHOOK_SECRET", "short"),
                ],
                "WEBHOOK_SECRET",
            ),
            (
                vec![
                    ("WEBHOOK_URL", "http://app/hooks"),
                    ("WEBHOOK_SECRET", "                "),
                ],
                "WEBHOOK_SECRET",
            ),
            (
                vec![
                    ("WEBHOOK_URL", "ftp://app/hooks"),
                    ("WEBHOOK_SECRET", secret),
                ],
                "WEBHOOK_URL",
            ),
            (vec![("WEBHOOK_SECRET", secret)], "WEBHOOK_URL"),
        ] {
            let err = with(&pairs).expect_err(var);
            assert_eq!(err.var, var, "{pairs:?}");
            assert!(!err.to_string().contains(secret), "{err}");
        }
    }

    #[test]
    fn the_redis_backlogs_are_positive_counts() {
        let both = |c: Config| (c.redis_push_backlog, c.redis_publish_backlog);
        assert_eq!(with(&[]).map(both).ok(), Some((100_000, 20_000)));
        assert_eq!(
            with(&[("REDIS_PUSH_BACKLOG", "50"), ("REDIS_PUBLISH_BACKLOG", "7")])
                .map(both)
                .ok(),
            Some((50, 7))
        );
        for var in ["REDIS_PUSH_BACKLOG", "REDIS_PUBLISH_BACKLOG"] {
            for bad in ["0", "-1", "lots"] {
                let err = with(&[(var, bad)]).expect_err(bad);
                assert_eq!(err.var, var);
            }
        }
    }

    #[test]
    fn defaults_run_in_dev_mode() {
        let config = with(&[]).expect("defaults are valid");
        assert!(config.jwt.is_dev());
        assert_eq!(config.bind.port(), 8080);
        assert_eq!(config.replay_events, 10_000);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(25));
    }

    #[test]
    fn durations_take_units() {
        let config = with(&[("HEARTBEAT_INTERVAL", "500ms"), ("CLIENT_TIMEOUT", "1.5s")])
            .expect("valid durations");
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.client_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = with(&[("MAX_MESSAGE_BYTES", "lots")]).expect_err("not a number");
        assert_eq!(err.var, "MAX_MESSAGE_BYTES");
        assert!(err.to_string().contains("MAX_MESSAGE_BYTES"));
        let err = with(&[("CLIENT_TIMEOUT", "-3")]).expect_err("negative");
        assert_eq!(err.var, "CLIENT_TIMEOUT");
    }

    #[test]
    fn a_secret_turns_dev_mode_off() {
        let config = with(&[("JWT_SECRET", "0123456789abcdef0123")]).expect("valid");
        assert!(!config.jwt.is_dev());
    }

    #[test]
    fn a_blank_or_short_secret_stops_start_up() {
        for secret in ["", "   ", "short", "               x"] {
            let err = with(&[("JWT_SECRET", secret)]).expect_err("refused");
            assert_eq!(err.var, "JWT_SECRET", "{secret:?}");
        }
    }

    #[test]
    fn dev_mode_runs_on_loopback_only_unless_asked_for() {
        let err = with(&[("BIND", "0.0.0.0:8080")]).expect_err("dev mode on the network");
        assert_eq!(err.var, "JWT_SECRET");
        assert!(err.to_string().contains("DEV_MODE=on"), "{err}");
        let config = with(&[("BIND", "0.0.0.0:8080"), ("DEV_MODE", "on")]).expect("asked for");
        assert!(config.jwt.is_dev());
        let config = with(&[
            ("BIND", "0.0.0.0:8080"),
            ("JWT_SECRET", "0123456789abcdef0123"),
        ])
        .expect("a secret");
        assert!(!config.jwt.is_dev());
        assert_eq!(
            with(&[("DEV_MODE", "off")]).expect_err("no key").var,
            "JWT_SECRET"
        );
        assert_eq!(
            with(&[("DEV_MODE", "maybe")]).expect_err("bad").var,
            "DEV_MODE"
        );
    }

    #[test]
    fn limits_have_defaults_a_real_board_never_hits() {
        let config = with(&[]).expect("defaults");
        assert_eq!(config.max_item_bytes, 16 * 1024);
        assert_eq!(config.max_board_bytes, 8 * 1024 * 1024);
        assert_eq!(config.max_sessions_per_user, 32);
        assert_eq!(config.write_timeout, Duration::from_secs(10));
        let config = with(&[("MAX_ITEM_BYTES", "1024"), ("WRITE_TIMEOUT", "2s")]).expect("set");
        assert_eq!(config.max_item_bytes, 1024);
        assert_eq!(config.write_timeout, Duration::from_secs(2));
    }

    #[test]
    fn origins_are_a_comma_separated_list() {
        let config =
            with(&[("ALLOWED_ORIGINS", "https://a.example, https://b.example/")]).expect("valid");
        let origins = config.allowed_origins.expect("set");
        assert!(origins.contains("https://a.example"));
        assert!(origins.contains("https://b.example"));
    }
}
