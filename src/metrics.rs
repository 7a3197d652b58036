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
        "boardcast_durable_events_total",
        "counter",
        "Durable events accepted.",
        DURABLE_EVENTS.get().to_string(),
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
