//! Latency recording and percentiles.

use std::time::Duration;

use serde::Serialize;

/// Recorded latencies, in microseconds. One per task, merged at the end, so recording is a
/// plain push.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// Every sample, unsorted until [`Latencies::summary`].
    samples: Vec<u32>,
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.samples
            .push(latency.as_micros().min(u32::MAX as u128) as u32);
    }

    /// Takes in another task's samples.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The percentiles (nearest rank).
    pub fn summary(&mut self) -> Summary {
        if self.samples.is_empty() {
            return Summary::default();
        }
        self.samples.sort_unstable();
        let at = |q: f64| {
            let rank =
                ((q * self.samples.len() as f64).ceil() as usize).clamp(1, self.samples.len());
            self.samples[rank - 1] as f64 / 1000.0
        };
        Summary {
            count: self.samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

/// Send times of one sender's numbered messages, so a receiver can match what it gets to when
/// it was sent. A ring: message `n` lives in slot `n % len`.
pub struct SendTimes {
    /// Nanoseconds since the run's start, per slot; 0 means never sent.
    slots: Vec<std::sync::atomic::AtomicU64>,
}

impl SendTimes {
    /// A ring of `len` slots.
    pub fn new(len: usize) -> Self {
        SendTimes {
            slots: (0..len.max(1))
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    /// Notes that message `n` was sent `at` nanoseconds after the start.
    pub fn sent(&self, n: u64, at: u64) {
        self.slots[(n % self.slots.len() as u64) as usize]
            .store(at.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// When message `n` was sent, if the ring still holds it.
    pub fn when(&self, n: u64) -> Option<u64> {
        let at = self.slots[(n % self.slots.len() as u64) as usize]
            .load(std::sync::atomic::Ordering::Relaxed);
        (at != 0).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(
            (s.p50, s.p90, s.p99, s.p999, s.max),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
    }

    #[test]
    fn merging_keeps_every_sample() {
        let mut a = Latencies::default();
        a.record(Duration::from_micros(1500));
        let mut b = Latencies::default();
        b.record(Duration::from_micros(500));
        a.merge(b);
        let s = a.summary();
        assert_eq!((s.count, s.p50, s.max), (2, 0.5, 1.5));
    }

    #[test]
    fn an_empty_set_summarizes_to_zeros() {
        assert_eq!(Latencies::default().summary(), Summary::default());
    }

    #[test]
    fn send_times_match_numbered_messages() {
        let times = SendTimes::new(4);
        times.sent(7, 1234);
        assert_eq!(times.when(7), Some(1234));
        assert_eq!(times.when(6), None);
        times.sent(11, 99); // the same slot as 7, later
        assert_eq!(times.when(11), Some(99));
    }
}
