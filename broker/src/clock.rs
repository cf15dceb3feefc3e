//! The broker's time: the real monotonic clock, or a virtual one that only moves
//! when a test advances it, so that TTLs and queue expiry can be tested in
//! microseconds and deterministically.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct Clock {
    start: Instant,
    /// Wall-clock time at `start`, for timestamps such as `x-death`'s.
    wall_start: SystemTime,
    /// `Some` for a virtual clock: milliseconds since start, moved by `advance`.
    virtual_ms: Option<AtomicU64>,
}

impl Clock {
    pub fn real() -> Self {
        Clock {
            start: Instant::now(),
            wall_start: SystemTime::now(),
            virtual_ms: None,
        }
    }

    pub fn virtual_clock() -> Self {
        Clock {
            virtual_ms: Some(AtomicU64::new(0)),
            ..Clock::real()
        }
    }

    pub fn is_virtual(&self) -> bool {
        self.virtual_ms.is_some()
    }

    /// Milliseconds since the broker started.
    pub fn now_ms(&self) -> u64 {
        match &self.virtual_ms {
            Some(ms) => ms.load(Ordering::Acquire),
            None => self.start.elapsed().as_millis() as u64,
        }
    }

    /// Moves a virtual clock forward; a real one cannot be moved.
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.virtual_ms {
            ms.fetch_add(by.as_millis() as u64, Ordering::AcqRel);
        }
    }

    /// Seconds since the Unix epoch, on this clock.
    pub fn unix_seconds(&self) -> u64 {
        self.unix_ms() / 1000
    }

    /// Milliseconds since the Unix epoch, on this clock: a stream's timestamps,
    /// which clients compare with wall-clock times.
    pub fn unix_ms(&self) -> u64 {
        (self.wall_start + Duration::from_millis(self.now_ms()))
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
