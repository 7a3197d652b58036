//! Rate limits and the cursor throttle: pure arithmetic over instants passed in, so that the
//! rules are tested without clocks or sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// Arrival jitter a cursor move may show without being held (see [`Throttle`]).
pub const CURSOR_JITTER: Duration = Duration::from_millis(10);

/// Per-user cursor throttle at one move per [`CURSOR_INTERVAL`] (20 a second), keeping only the
/// newest move while one is held.
///
/// It paces by a theoretical schedule (the generic cell rate algorithm): each move that goes
/// out books the next slot one interval later; a move that comes before its slot (less
/// [`CURSOR_JITTER`]) is held until then, and a newer one replaces it. The long-run rate is
/// exactly 20 a second and two moves are never closer than 40 ms, yet a sender moving at 20 Hz
/// whose moves arrive a few milliseconds early or late is never delayed. Counting from the
/// instant of the last send instead would hold every move that arrives a hair early, and a
/// late one would push all the following ones later.
#[derive(Clone, Debug)]
pub struct Throttle<T> {
    /// The next slot: when a move may go out on the pace.
    next_slot: Option<Instant>,
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
            next_slot: None,
            pending: None,
        }
    }
}

impl<T> Throttle<T> {
    fn on_pace(&self, now: Instant) -> bool {
        self.next_slot
            .is_none_or(|slot| now + CURSOR_JITTER >= slot)
    }

    fn book(&mut self, now: Instant) {
        let slot = self.next_slot.map_or(now, |slot| slot.max(now));
        self.next_slot = Some(slot + CURSOR_INTERVAL);
    }

    /// Offers the newest move.
    pub fn offer(&mut self, value: T, now: Instant) -> Offer<T> {
        if self.on_pace(now) && self.pending.is_none() {
            self.book(now);
            return Offer::Send(value);
        }
        self.pending = Some(value);
        Offer::HeldUntil(self.due().unwrap_or(now))
    }

    /// Takes the held move when its slot has come.
    pub fn flush(&mut self, now: Instant) -> Option<T> {
        if !self.on_pace(now) {
            return None;
        }
        let value = self.pending.take()?;
        self.book(now);
        Some(value)
    }

    /// When the held move may go out, if one is held.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(
            self.next_slot
                .map_or_else(Instant::now, |slot| slot - CURSOR_JITTER),
        )
    }

    /// Whether a move is held back.
    #[cfg(test)]
    fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Sessions per user on this instance, so that one token cannot open sessions without end
/// (`MAX_SESSIONS_PER_USER`). A session holds a [`SessionSlot`] for its whole life.
///
/// Users are counted by a keyed 64-bit hash of (tenant, user) rather than by name: every idle
/// connection pays for this map, and two users sharing a count would take a collision of a
/// keyed hash (about one in 2^64 per pair), with no worse effect than a shared bound.
#[derive(Debug)]
pub struct SessionSlots {
    /// Open sessions by user hash.
    open: Mutex<HashMap<u64, u32>>,
    /// Most sessions one user may hold.
    max: usize,
    /// The hash's random key, per process.
    hasher: std::hash::RandomState,
}

/// One user's claim on one session; gives the place back when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    /// The counts it belongs to.
    slots: Arc<SessionSlots>,
    /// Whose slot it is (the user's hash).
    user: u64,
}

impl SessionSlots {
    /// Counts allowing `max` sessions per user.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SessionSlots {
            open: Mutex::new(HashMap::new()),
            max,
            hasher: std::hash::RandomState::new(),
        })
    }

    fn key(&self, tenant: &str, user: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((tenant, user))
    }

    /// A slot for one more session of `user` in `tenant`, or `None` when the user holds the
    /// most already.
    pub fn take(self: &Arc<Self>, tenant: &str, user: &str) -> Option<SessionSlot> {
        let key = self.key(tenant, user);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_default();
        if *count as usize >= self.max {
            return None;
        }
        *count += 1;
        Some(SessionSlot {
            slots: Arc::clone(self),
            user: key,
        })
    }

    /// Sessions `user` of `tenant` holds now.
    #[cfg(test)]
    fn held(&self, tenant: &str, user: &str) -> usize {
        let key = self.key(tenant, user);
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&key).map_or(0, |n| *n as usize)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_the_bound_of_sessions_and_gets_them_back() {
        let slots = SessionSlots::new(2);
        let a = slots.take("t", "u").expect("first");
        let _b = slots.take("t", "u").expect("second");
        assert!(slots.take("t", "u").is_none(), "third");
        assert!(slots.take("t", "other").is_some(), "per user");
        assert!(slots.take("t2", "u").is_some(), "per tenant");
        drop(a);
        assert_eq!(slots.held("t", "u"), 1);
        assert!(slots.take("t", "u").is_some(), "a slot came back");
    }

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
        let ms = Duration::from_millis;
        let mut throttle = Throttle::default();
        assert_eq!(throttle.offer(1, t0), Offer::Send(1));
        let due = t0 + CURSOR_INTERVAL - CURSOR_JITTER;
        assert_eq!(throttle.offer(2, t0 + ms(10)), Offer::HeldUntil(due));
        assert_eq!(throttle.offer(3, t0 + ms(20)), Offer::HeldUntil(due));
        assert_eq!(throttle.flush(t0 + ms(30)), None);
        assert_eq!(throttle.due(), Some(due), "still held");
        assert_eq!(throttle.flush(due), Some(3));
        assert_eq!((throttle.due(), throttle.has_pending()), (None, false));
        // The next move right after a flush waits for the next slot.
        assert!(matches!(
            throttle.offer(4, due + ms(1)),
            Offer::HeldUntil(_)
        ));
    }

    #[test]
    fn the_pace_never_exceeds_twenty_a_second() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        let mut sent = vec![];
        // A move every millisecond for two seconds, flushing whenever something is due.
        for i in 0..2000u64 {
            let now = t0 + Duration::from_millis(i);
            if throttle.flush(now).is_some() {
                sent.push(now);
            }
            if let Offer::Send(_) = throttle.offer(i, now) {
                sent.push(now);
            }
        }
        assert!(sent.len() <= 41, "{} in 2 s", sent.len());
        assert!(sent
            .windows(2)
            .all(|w| w[1] - w[0] >= CURSOR_INTERVAL - CURSOR_JITTER));
    }

    #[test]
    fn a_jittery_twenty_hertz_sender_is_never_held() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = Throttle::default();
        // Arrivals every 50 ms, alternately 4 ms early and 4 ms late.
        for k in 0..400u32 {
            let ideal = t0 + ms(100) + ms(50) * k;
            let arrival = if k % 2 == 0 {
                ideal - ms(4)
            } else {
                ideal + ms(4)
            };
            assert_eq!(throttle.offer(k, arrival), Offer::Send(k), "move {k}");
        }
    }
}
