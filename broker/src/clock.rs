//! The broker's time: the real monotonic clock, or a virtual one that only moves
//! when a test advances it, so that TTLs, queue expiry and consumer timeouts can
//! be tested in microseconds and deterministically.
//!
//! The real clock is tokio's: under `tokio::time::pause()` it stands still and
//! `tokio::time::advance` moves it, together with the heartbeat timers, which
//! are tokio timers too. Outside a paused runtime it is the monotonic clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

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
            // Saturating: a thread outside a paused runtime reads real time,
            // which may be behind a paused clock that was advanced.
            None => Instant::now()
                .saturating_duration_since(self.start)
                .as_millis() as u64,
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
