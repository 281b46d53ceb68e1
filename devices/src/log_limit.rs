// SPDX-License-Identifier: Apache-2.0
//! A rate limiter for warnings that a guest or a client can trigger at will.

use std::time::{Duration, Instant};

/// Lines allowed per window.
const LINES_PER_WINDOW: u32 = 10;
/// Length of one window.
const WINDOW: Duration = Duration::from_secs(1);

/// Lets through at most [`LINES_PER_WINDOW`] lines a second and then reports how many it
/// swallowed, once the next window starts.
#[derive(Debug)]
pub struct LogLimiter {
    /// Names the device at the start of each line.
    prefix: &'static str,
    window_start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Creates a limiter with a fresh window whose lines start with `prefix`.
    pub fn new(prefix: &'static str) -> Self {
        LogLimiter {
            prefix,
            window_start: None,
            lines: 0,
            suppressed: 0,
        }
    }

    /// Logs `args` as a warning unless the window's budget is spent.
    pub fn warn(&mut self, args: std::fmt::Arguments<'_>) {
        if self.allow(Instant::now()) {
            log::warn!("{}: {args}", self.prefix);
        }
    }

    /// Returns whether a line may be printed at `now`, starting a new window (and printing the
    /// summary of the old one) when due.
    fn allow(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW);
        if expired {
            if self.suppressed > 0 {
                log::warn!(
                    "{}: {} similar warnings suppressed",
                    self.prefix,
                    self.suppressed
                );
            }
            self.window_start = Some(now);
            self.lines = 0;
            self.suppressed = 0;
        }

        if self.lines < LINES_PER_WINDOW {
            self.lines += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_lines_then_silence_until_next_window() {
        let mut limiter = LogLimiter::new("test");
        let t0 = Instant::now();

        let allowed = (0..100).filter(|_| limiter.allow(t0)).count();
        assert_eq!(allowed, 10);
        assert_eq!(limiter.suppressed, 90);

        assert!(limiter.allow(t0 + WINDOW));
        assert_eq!(limiter.suppressed, 0);
        assert_eq!(limiter.lines, 1);
    }
}
