//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Plain atomics: one relaxed increment on the paths they count, and a hand-written renderer,
//! since the handful of series here does not need a metrics library.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::close;

/// A monotonically growing count.
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicU64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Gauge(AtomicU64::new(0))
    }

    /// Sets the value.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Ephemeral events not published because too many waited for Redis.
pub static PUBLISH_DROPPED: Counter = Counter::new();
/// Webhook events delivered (answered 2xx).
pub static WEBHOOK_EVENTS: Counter = Counter::new();
/// Webhook requests that failed (not 2xx, or no answer in time).
pub static WEBHOOK_FAILURES: Counter = Counter::new();
/// Age of the oldest event in the last webhook request, in milliseconds.
pub static WEBHOOK_LAG_MS: Gauge = Gauge::new();

/// WebSocket sessions opened.
pub static SESSIONS_OPENED: Counter = Counter::new();
/// WebSocket sessions ended.
pub static SESSIONS_CLOSED: Counter = Counter::new();
/// Text frames received from clients.
pub static FRAMES_RECEIVED: Counter = Counter::new();
/// Frames refused or dropped by the rate limit.
pub static RATE_LIMITED: Counter = Counter::new();
/// Durable events accepted.
pub static DURABLE_EVENTS: Counter = Counter::new();
/// Sessions closed for being too slow (4009).
pub static CLOSED_SLOW: Counter = Counter::new();
/// Sessions closed for rate abuse (4008).
pub static CLOSED_ABUSE: Counter = Counter::new();
/// Sessions closed at token expiry (4001).
pub static CLOSED_EXPIRED: Counter = Counter::new();

/// Counts a server-initiated close by its code.
pub fn closed_with(code: u16) {
    match code {
        close::TOO_SLOW => CLOSED_SLOW.inc(),
        close::RATE_ABUSE => CLOSED_ABUSE.inc(),
        close::TOKEN_EXPIRED => CLOSED_EXPIRED.inc(),
        _ => {}
    }
}

/// Renders every series; `rooms` is read from the registry at scrape time.
pub fn render(rooms: usize) -> String {
    let mut out = String::new();
    let open = SESSIONS_OPENED.get().saturating_sub(SESSIONS_CLOSED.get());
    let mut series = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    series(
        "boardcast_sessions",
        "gauge",
        "Open WebSocket sessions.",
        open.to_string(),
    );
    series(
        "boardcast_rooms",
        "gauge",
        "Board rooms running on this instance.",
        rooms.to_string(),
    );
    series(
        "boardcast_sessions_opened_total",
        "counter",
        "Sessions opened.",
        SESSIONS_OPENED.get().to_string(),
    );
    series(
        "boardcast_frames_received_total",
        "counter",
        "Text frames received.",
        FRAMES_RECEIVED.get().to_string(),
    );
    series(
        "boardcast_rate_limited_total",
        "counter",
        "Frames refused or dropped by the rate limit.",
        RATE_LIMITED.get().to_string(),
    );
    series(
        "boardcast_publish_dropped_total",
        "counter",
        "Ephemeral events (cursor moves, typing) not published to Redis because REDIS_PUBLISH_BACKLOG waited already.",
        PUBLISH_DROPPED.get().to_string(),
    );
    series(
        "boardcast_durable_events_total",
        "counter",
        "Durable events accepted.",
        DURABLE_EVENTS.get().to_string(),
    );
    series(
        "boardcast_webhook_events_total",
        "counter",
        "Webhook events delivered.",
        WEBHOOK_EVENTS.get().to_string(),
    );
    series(
        "boardcast_webhook_failures_total",
        "counter",
        "Webhook requests that failed (not 2xx, or no answer in 5 s).",
        WEBHOOK_FAILURES.get().to_string(),
    );
    series(
        "boardcast_webhook_lag_seconds",
        "gauge",
        "Age of the oldest event in the last webhook request.",
        format!("{:.3}", WEBHOOK_LAG_MS.get() as f64 / 1000.0),
    );
    let _ = writeln!(
        out,
        "# HELP boardcast_sessions_closed_total Sessions closed by the server, by reason.\n\
         # TYPE boardcast_sessions_closed_total counter\n\
         boardcast_sessions_closed_total{{reason=\"slow\"}} {}\n\
         boardcast_sessions_closed_total{{reason=\"abuse\"}} {}\n\
         boardcast_sessions_closed_total{{reason=\"expired\"}} {}",
        CLOSED_SLOW.get(),
        CLOSED_ABUSE.get(),
        CLOSED_EXPIRED.get()
    );
    out
}
