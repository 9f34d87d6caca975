//! How long an idle worker polls its socket before it sleeps.
//!
//! A worker that sleeps the moment its socket is empty pays a wake-up for the next datagram:
//! on a virtual machine whose idle vCPU halts, tens of µs and, when the host is busy,
//! milliseconds, during which datagrams queue while the guest sees an idle core. So after the
//! socket runs dry the worker keeps polling it for a while, and sleeps only when nothing came.
//! The window adapts the way KVM's halt-polling does: it doubles (from [`MIN_SPIN`]) after a
//! sleep that a longer window would have avoided (the next datagram came within the most the
//! window may reach), and halves after a sleep longer than that, down to no polling at all. A
//! steady flow of datagrams a few tens of µs apart keeps the worker awake; a trickle (one room
//! at 50 packets a second) lets it sleep at once and costs no CPU.
//!
//! Pure: the caller reads the clock and reports what happened.

use std::time::Duration;

/// The smallest window once polling starts.
pub(crate) const MIN_SPIN: Duration = Duration::from_micros(5);

/// An adaptive polling window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdleSpin {
    /// The current window, ns.
    window_ns: u64,
    /// The most it may grow to, ns (0: never poll).
    max_ns: u64,
}

impl IdleSpin {
    /// A window that grows up to `max` (zero: always sleep at once).
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            window_ns: 0,
            max_ns: u64::try_from(max.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Whether a worker idle for `idle` (since its socket ran dry) should poll once more
    /// instead of sleeping.
    pub(crate) fn keep_polling(&self, idle: Duration) -> bool {
        (idle.as_nanos() as u64) < self.window_ns
    }

    /// Adapts the window after a sleep: `idle` is the time from the socket running dry to the
    /// wake-up (polling and sleeping together).
    pub(crate) fn slept(&mut self, idle: Duration) {
        let idle = idle.as_nanos() as u64;
        let min = MIN_SPIN.as_nanos() as u64;
        if self.max_ns < min {
            return;
        }
        if idle <= self.max_ns {
            // A window of `idle` would have caught it without sleeping.
            self.window_ns = (self.window_ns * 2).clamp(min, self.max_ns);
        } else {
            self.window_ns /= 2;
            if self.window_ns < min {
                self.window_ns = 0;
            }
        }
    }

    /// The current window.
    #[cfg(test)]
    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn short_gaps_grow_the_window_to_its_limit() {
        let mut s = IdleSpin::new(50 * US);
        assert!(
            !s.keep_polling(Duration::ZERO),
            "no polling before a short gap was seen"
        );
        s.slept(30 * US);
        assert_eq!(s.window(), MIN_SPIN);
        for _ in 0..10 {
            s.slept(30 * US);
        }
        assert_eq!(s.window(), 50 * US);
        assert!(s.keep_polling(49 * US) && !s.keep_polling(50 * US));
    }

    #[test]
    fn long_gaps_shrink_it_to_nothing() {
        let mut s = IdleSpin::new(50 * US);
        for _ in 0..10 {
            s.slept(10 * US);
        }
        s.slept(20_000 * US);
        assert_eq!(s.window(), 25 * US);
        for _ in 0..10 {
            s.slept(20_000 * US);
        }
        assert_eq!(s.window(), Duration::ZERO);
        assert!(!s.keep_polling(Duration::ZERO));
    }

    #[test]
    fn a_zero_limit_never_polls() {
        let mut s = IdleSpin::new(Duration::ZERO);
        for _ in 0..10 {
            s.slept(US);
        }
        assert!(!s.keep_polling(Duration::ZERO));
    }
}
