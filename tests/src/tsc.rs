// SPDX-License-Identifier: Apache-2.0
//! The host's time-stamp counter, for benchmarks that compare it with a guest's: KVM gives a
//! guest the host's TSC at the same rate, shifted by a per-VM offset.

use std::time::{Duration, Instant};

/// The host's TSC now.
pub fn now() -> u64 {
    // SAFETY: rdtsc has no memory effects; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The TSC's rate in MHz, measured over 200 ms of wall-clock time.
pub fn mhz() -> f64 {
    let (t0, c0) = (Instant::now(), now());
    std::thread::sleep(Duration::from_millis(200));
    let cycles = now() - c0;
    cycles as f64 / t0.elapsed().as_secs_f64() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_moves_forward_at_a_plausible_rate() {
        let before = now();
        let rate = mhz();
        assert!(now() > before);
        assert!((100.0..10_000.0).contains(&rate), "{rate} MHz");
    }
}
