// SPDX-License-Identifier: Apache-2.0
//! A rate limiter for warnings that a client (or a buggy producer) can trigger at will.

use std::time::{Duration, Instant};

/// Lines allowed per window.
const LINES_PER_WINDOW: u32 = 10;
/// Length of one window.
const WINDOW: Duration = Duration::from_secs(1);

/// Lets through at most [`LINES_PER_WINDOW`] lines a second and then reports how many it
/// swallowed, once the next window starts.
#[derive(Debug, Default)]
pub struct LogLimiter {
    window_start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// Logs `args` as a warning unless the window's budget is spent.
    pub fn warn(&mut self, args: std::fmt::Arguments<'_>) {
        if self.allow(Instant::now()) {
            log::warn!("spice: {args}");
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW);
        if expired {
            if self.suppressed > 0 {
                log::warn!("spice: {} similar warnings suppressed", self.suppressed);
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
    fn ten_lines_a_second() {
        let mut limiter = LogLimiter::default();
        let start = Instant::now();
        let allowed = (0..25).filter(|_| limiter.allow(start)).count();
        assert_eq!(allowed, 10);
        assert!(limiter.allow(start + WINDOW));
        assert_eq!(limiter.suppressed, 0);
    }
}
