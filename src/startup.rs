//! The [`Application`]: built from a [`Config`], bound to its port, actors started. Tests run
//! this very server on port 0.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::HttpService;
use actix_service::{fn_service, map_config};
use actix_web::dev::{AppConfig, Extensions, Server};
use actix_web::{web, App};
use tokio::net::TcpStream;

use crate::actors::broker::{Broker, GetReady, GetRedis, Retire};
use crate::actors::presence::Presence;
use crate::actors::registry::Registry;
use crate::actors::room::RoomSettings;
use crate::actors::webhook::Webhooks;
use crate::auth::{AuthError, Verifier};
use crate::backend::embedded::sqlite::{Store, StoreError, DB_FILE};
use crate::config::Config;
use crate::http;
use crate::limits::SessionSlots;
use crate::webhook::Poster;

/// How long a dead peer's connection may hold unacknowledged data before the kernel drops it.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time given to sessions to send their close frames before the server stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
/// Longest wait for the instance's leaves to be published at shutdown: long enough for
/// thousands of boards on a busy machine, short of the 10 s a container runtime gives before
/// SIGKILL. Past it the lease is left to expire and the other instances sweep.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(8);
/// Idle time before TCP keepalive probes start.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// What every request handler and session shares.
pub struct AppState {
    /// The settings.
    pub config: Config,
    /// Verifies tokens.
    pub verifier: Verifier,
    /// Finds rooms.
    pub registry: Arc<Registry>,
    /// Presence of every board.
    pub presence: Addr<Presence>,
    /// The door to the shared world.
    pub broker: Addr<Broker>,
    /// Whether the backend answers; set by the broker.
    pub ready: Arc<AtomicBool>,
    /// Sessions per user on this instance (`MAX_SESSIONS_PER_USER`).
    pub session_slots: Arc<SessionSlots>,
    /// Posts board events to `WEBHOOK_URL`, when set.
    pub webhooks: Option<Addr<Webhooks>>,
}

impl AppState {
    /// Whether the backend answers (always, in embedded mode).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    /// The JWT key is unusable.
    #[error("JWT key: {0}")]
    Key(#[from] AuthError),
    /// `REDIS_URL` cannot be used.
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    /// The embedded mode's storage cannot be used.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// No HTTP client for `WEBHOOK_URL` could be made.
    #[error("WEBHOOK_URL: {0}")]
    Webhook(String),
    /// An actor did not answer during start-up.
    #[error("start-up: {0}")]
    Actor(#[from] actix::MailboxError),
}

/// A bound, not yet running, server with its actors.
pub struct Application {
    /// The port actually bound (useful with port 0).
    port: u16,
    /// The HTTP server.
    server: Server,
    /// Shared state, kept for shutdown.
    state: web::Data<AppState>,
}

impl Application {
    /// Starts the actors and binds the server. Must run inside an actix system.
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let verifier = Verifier::new(&config.jwt)?
            .expecting(config.jwt_audience.as_deref(), config.jwt_issuer.as_deref());
        if config.jwt.is_dev() {
            log::warn!("JWT_SECRET is not set: dev mode, a random secret, and /dev/token is open");
        }
        let poster = match &config.webhook {
            Some(webhook) => {
                log::info!("webhooks: posting board events to {}", redact(&webhook.url));
                Some(Poster::new(webhook).map_err(StartupError::Webhook)?)
            }
            None => None,
        };
        // Each board's outbox keeps as many events as its replay log.
        let hook_cap = config.replay_events;
        let mut webhooks = None;
        let broker = match &config.redis_url {
            Some(url) => {
                log::info!(
                    "scale-out mode: Redis {}at {}",
                    if config.redis_cluster { "Cluster " } else { "" },
                    redact_all(url)
                );
                Broker::start_redis(
                    url,
                    config.redis_cluster,
                    config.redis_prefix.clone(),
                    config.board_limits(),
                    (config.redis_push_backlog, config.redis_publish_backlog),
                    if poster.is_some() { hook_cap } else { 0 },
                )
                .await?
            }
            None => {
                let store = Store::open(&config.data_dir, config.sync)?;
                log::info!(
                    "embedded mode: boards stored in {} (SYNC={:?})",
                    if config.data_dir == ":memory:" {
                        "memory only".to_string()
                    } else {
                        format!("{}/{DB_FILE}", config.data_dir)
                    },
                    config.sync
                );
                webhooks = poster
                    .clone()
                    .map(|poster| Webhooks::in_memory(poster, hook_cap).start());
                let hooks = webhooks.clone().map(Addr::recipient);
                Broker::start_embedded(store, config.board_limits(), hooks)
            }
        };
        let redis = broker.send(GetRedis).await?;
        let ready = broker.send(GetReady).await?;
        let hooks = webhooks.clone().map(Addr::recipient);
        if let (Some(poster), Some(redis)) = (poster, &redis) {
            webhooks = Some(Webhooks::over_redis(poster, redis.clone()).start());
        }
        let presence = Presence::new(broker.clone(), redis, hooks).start();
        let settings = RoomSettings {
            backlog_bound: config.session_queue * 4,
            shared: config.redis_url.is_some(),
            heartbeat_tick: config.heartbeat_tick(),
        };
        let registry = Registry::new(presence.clone(), broker.clone(), settings);
        let listener =
            TcpListener::bind(config.bind).map_err(|e| StartupError::Bind(config.bind, e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(config.bind, e))?
            .port();
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.workers
        };
        let body_limit = config.max_message_bytes;
        let session_slots = SessionSlots::new(config.max_sessions_per_user);
        let state = web::Data::new(AppState {
            session_slots,
            config,
            verifier,
            registry,
            presence,
            broker,
            ready,
            webhooks,
        });
        let app_state = state.clone();
        let app = move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(web::PayloadConfig::new(body_limit))
                .route("/ws/{board}", web::get().to(http::ws::connect))
                .route("/api/boards/{board}", web::get().to(http::api::board))
                .route(
                    "/api/boards/{board}/events",
                    web::post().to(http::api::board_event),
                )
                .route(
                    "/api/boards/{board}/events",
                    web::get().to(http::api::events),
                )
                .route(
                    "/api/boards/{board}/presence",
                    web::get().to(http::api::presence),
                )
                .route("/api/boards/{board}/kick", web::post().to(http::api::kick))
                .route(
                    "/api/users/{user}/events",
                    web::post().to(http::api::user_event),
                )
                .route("/api/events", web::post().to(http::api::tenant_event))
                .route("/api/presence", web::get().to(http::api::tenant_presence))
                .route("/metrics", web::get().to(http::api::metrics))
                .route("/healthz", web::get().to(http::health::healthz))
                .route("/readyz", web::get().to(http::health::readyz))
                .route("/dev/token", web::get().to(http::dev::token))
                .route("/", web::get().to(http::assets::index))
                .route("/favicon.ico", web::get().to(http::assets::favicon))
                .route(
                    "/client/boardcast.js",
                    web::get().to(http::assets::client_js),
                )
                .route(
                    "/client/boardcast.d.ts",
                    web::get().to(http::assets::client_types),
                )
        };
        let sessions = state.clone().into_inner();
        // The HTTP server, built from its parts so that WebSocket upgrades leave the HTTP/1
        // dispatcher (see `http::upgrade`) while everything else is routed by the app.
        let server = Server::build()
            .workers(workers)
            .disable_signals()
            .listen("boardcast", listener, move || {
                let sessions = Arc::clone(&sessions);
                HttpService::build()
                    .on_connect_ext(tune_socket)
                    .upgrade(fn_service(move |request| {
                        http::upgrade::serve(Arc::clone(&sessions), request)
                    }))
                    .h1(map_config(app(), |_| AppConfig::default()))
                    .tcp()
            })
            .map_err(|e| StartupError::Bind(([0, 0, 0, 0], port).into(), e))?
            .run();
        Ok(Application {
            port,
            server,
            state,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT or SIGTERM, then closes every session with 1012 and stops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let state = self.state.clone();
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            log::info!("shutting down: closing sessions with 1012");
            state.registry.close_all();
            // Everyone else hears this instance's users leave now, not after a sweep.
            let retire = state.broker.send(Retire);
            let grace = actix_web::rt::time::sleep(SHUTDOWN_GRACE);
            let (_, _) = futures_util::future::join(
                actix_web::rt::time::timeout(RETIRE_TIMEOUT, retire),
                grace,
            )
            .await;
            handle.stop(true).await;
        });
        self.server.await
    }

    /// Serves until stopped; for tests, which end with their runtime.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// A Redis URL with its password hidden, for the log.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Redis URLs with their passwords hidden, each of a comma-separated list (cluster seeds).
fn redact_all(urls: &str) -> String {
    urls.split(',').map(redact).collect::<Vec<_>>().join(",")
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// No Nagle delay, keepalive and a user timeout on every accepted socket, so frames leave at
/// once and a vanished peer is noticed even while its session is not being polled.
fn tune_socket(tcp: &TcpStream, _: &mut Extensions) {
    {
        // Realtime frames are small and must not wait for Nagle's algorithm (with delayed ACKs
        // it adds about 40 ms per frame).
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY: {e}");
        }
        let sock = socket2::SockRef::from(tcp);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE)
            .with_interval(Duration::from_secs(10));
        if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
            log::debug!("cannot set TCP keepalive: {e}");
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(e) = sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
            log::debug!("cannot set TCP user timeout: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_node_s_password_is_hidden() {
        assert_eq!(
            redact_all("redis://:pw1@a:7000/,redis://user:pw2@b:7000/,redis://c:7000/"),
            "redis://***@a:7000/,redis://***@b:7000/,redis://c:7000/"
        );
    }
}
