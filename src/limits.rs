//! Rate limits and the cursor throttle: pure arithmetic over instants passed in, so that the
//! rules are tested without clocks or sockets.

use std::time::{Duration, Instant};

/// Window over which sustained abuse is judged.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(5);
/// A session sending more than this multiple of its rate over [`ABUSE_WINDOW`] is closed.
pub const ABUSE_FACTOR: f64 = 10.0;
/// Least time between two cursor deliveries of one user.
pub const CURSOR_INTERVAL: Duration = Duration::from_millis(50);

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens the bucket holds.
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts frames over the last [`ABUSE_WINDOW`] (two half-windows, so the count never forgets
/// more than half a window) and says when they exceed [`ABUSE_FACTOR`] times the rate.
#[derive(Clone, Debug)]
pub struct AbuseWindow {
    /// Frames allowed in one window.
    limit: f64,
    /// Start of the current half-window.
    started: Instant,
    /// Frames in the previous half-window.
    previous: u64,
    /// Frames in the current half-window.
    current: u64,
}

impl AbuseWindow {
    /// A window for a session allowed `rate` frames a second.
    pub fn new(rate: f64, now: Instant) -> Self {
        AbuseWindow {
            limit: rate * ABUSE_FACTOR * ABUSE_WINDOW.as_secs_f64(),
            started: now,
            previous: 0,
            current: 0,
        }
    }

    /// Counts one frame; true when the session is now abusive.
    pub fn record(&mut self, now: Instant) -> bool {
        let half = ABUSE_WINDOW / 2;
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= half * 2 {
            self.previous = 0;
            self.current = 0;
            self.started = now;
        } else if elapsed >= half {
            self.previous = self.current;
            self.current = 0;
            self.started += half;
        }
        self.current += 1;
        (self.previous + self.current) as f64 > self.limit
    }
}

/// Per-user cursor throttle: a move goes out at once when the last one went out at least
/// [`CURSOR_INTERVAL`] ago; otherwise only the newest is kept, to go out when the interval ends.
#[derive(Clone, Debug)]
pub struct Throttle<T> {
    /// When the last move went out.
    last_sent: Option<Instant>,
    /// The newest move held back, if any.
    pending: Option<T>,
}

/// What to do with a move offered to a [`Throttle`].
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Send this now.
    Send(T),
    /// Held; a flush is due at this instant (schedule one if none is).
    HeldUntil(Instant),
}

impl<T> Default for Throttle<T> {
    fn default() -> Self {
        Throttle {
            last_sent: None,
            pending: None,
        }
    }
}

impl<T> Throttle<T> {
    /// Offers the newest move.
    pub fn offer(&mut self, value: T, now: Instant) -> Offer<T> {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < CURSOR_INTERVAL => {
                self.pending = Some(value);
                Offer::HeldUntil(last + CURSOR_INTERVAL)
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = None;
                Offer::Send(value)
            }
        }
    }

    /// Takes the held move when its time has come.
    pub fn flush(&mut self, now: Instant) -> Option<T> {
        let due = self
            .last_sent
            .is_none_or(|last| now.saturating_duration_since(last) >= CURSOR_INTERVAL);
        if due {
            let value = self.pending.take()?;
            self.last_sent = Some(now);
            Some(value)
        } else {
            None
        }
    }

    /// Whether a move is held back.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5.0, t0);
        assert!((0..5).all(|_| bucket.try_take(t0)));
        assert!(!bucket.try_take(t0));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(100)));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..5).all(|_| bucket.try_take(later)));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn abuse_is_ten_times_the_rate_over_five_seconds() {
        let t0 = Instant::now();
        let mut window = AbuseWindow::new(2.0, t0);
        // 2/s × 10 × 5 s = 100 frames allowed.
        assert!(!(0..100).any(|_| window.record(t0)));
        assert!(window.record(t0 + Duration::from_millis(10)));
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_abusive() {
        let t0 = Instant::now();
        let mut window = AbuseWindow::new(50.0, t0);
        for i in 0..10_000u64 {
            assert!(!window.record(t0 + Duration::from_millis(i * 20)));
        }
    }

    #[test]
    fn the_throttle_sends_at_once_then_keeps_only_the_newest() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.offer(1, t0), Offer::Send(1));
        let due = t0 + CURSOR_INTERVAL;
        assert_eq!(
            throttle.offer(2, t0 + Duration::from_millis(10)),
            Offer::HeldUntil(due)
        );
        assert_eq!(
            throttle.offer(3, t0 + Duration::from_millis(20)),
            Offer::HeldUntil(due)
        );
        assert_eq!(throttle.flush(t0 + Duration::from_millis(30)), None);
        assert_eq!(throttle.flush(due), Some(3));
        assert!(!throttle.has_pending());
        // The next move right after a flush waits for the interval again.
        assert!(matches!(
            throttle.offer(4, due + Duration::from_millis(1)),
            Offer::HeldUntil(_)
        ));
        assert_eq!(throttle.offer(5, due + CURSOR_INTERVAL), Offer::Send(5));
    }
}
