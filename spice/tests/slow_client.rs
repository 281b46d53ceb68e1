// SPDX-License-Identifier: Apache-2.0
//! The slow-client policy end to end: a display client that stops reading must not slow the
//! producer nor cost unbounded memory, and must see the current screen once it reads again.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use spice::Rect;

/// A small deterministic generator, so failures can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % u64::from(below)) as u32
    }
}

/// One random update inside a `w` x `h` screen.
fn random_update(s: &mut Source, rng: &mut Lcg, w: u32, h: u32) {
    let rw = 1 + rng.next(96);
    let rh = 1 + rng.next(96);
    let x = rng.next(w - rw) as i32;
    let y = rng.next(h - rh) as i32;
    let dest = Rect::new(x, y, rw, rh);
    match rng.next(3) {
        0 => s.fill(dest, rng.next(0x0100_0000)),
        1 => {
            let seed = rng.next(0x0100_0000);
            let noisy = rng.next(2) == 0;
            let pixels: Vec<u32> = (0..rw * rh)
                .map(|i| {
                    if noisy {
                        i.wrapping_mul(seed) & 0xff_ffff
                    } else {
                        seed ^ (i / 8)
                    }
                })
                .collect();
            s.image(dest, &pixels);
        }
        _ => {
            let sx = rng.next(w - rw) as i32;
            let sy = rng.next(h - rh) as i32;
            s.copy_bits(sx, sy, dest);
        }
    }
}

/// Resident set size of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: 0 kB");
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_client_that_stops_reading_never_slows_the_producer() {
    let (w, h) = (640u32, 480u32);
    let harness = start(None, w, h);
    let (_main, session) = connect_main(harness.addr, "");
    // Raw bitmaps (no LZ4 cap) make the updates as large as they get.
    let mut display = connect_display(harness.addr, session, 0, "");
    let mut screen = Screen::default();
    screen.sync_to(
        &mut display,
        &harness.producer.frame(),
        Duration::from_secs(10),
    );
    let rss_before = rss_kib();

    // The client now reads nothing while the producer sends thousands of updates, with a
    // mode change in the middle.
    let (slowest, max_queued, rounds) = harness.producer.run(move |s| {
        let mut rng = Lcg(7);
        let (mut slowest, mut max_queued) = (Duration::ZERO, 0usize);
        let (mut w, mut h) = (w, h);
        for round in 0..6000 {
            if round == 3000 {
                s.sink.primary_destroyed();
                (w, h) = (600, 400);
                s.frame.width = w;
                s.frame.height = h;
                s.frame.pixels = (0..w * h).map(|i| i & 0xff_ffff).collect();
                s.sink.primary_created(w, h);
            }
            let start = Instant::now();
            random_update(s, &mut rng, w, h);
            slowest = slowest.max(start.elapsed());
            max_queued = max_queued.max(s.sink.queued_bytes());
        }
        (slowest, max_queued, 6000)
    });
    let rss_growth = rss_kib().saturating_sub(rss_before);

    assert_eq!(rounds, 6000);
    assert!(
        slowest < Duration::from_millis(50),
        "slowest producer call {slowest:?}"
    );
    let bound = (4 << 20) + 2 * 4 * (w * h) as usize;
    assert!(
        max_queued <= bound,
        "queued {max_queued} bytes, bound {bound}"
    );
    assert!(rss_growth < 64 * 1024, "RSS grew by {rss_growth} KiB");

    // Reading again, the client catches up with the current screen.
    let frame = harness.producer.frame();
    screen.sync_to(&mut display, &frame, Duration::from_secs(30));
    assert_eq!((screen.width, screen.height), (600, 400));

    // And later updates still flow normally.
    harness
        .producer
        .run(|s| s.fill(Rect::new(1, 2, 30, 40), 0x00c0_ffee));
    screen.sync_to(
        &mut display,
        &harness.producer.frame(),
        Duration::from_secs(10),
    );
}

#[test]
fn a_slow_reader_sees_fewer_larger_updates_and_ends_right() {
    let harness = start(None, 320, 240);
    let (_main, session) = connect_main(harness.addr, "");
    let mut display = connect_display(harness.addr, session, GTK_DISPLAY_CAPS, "");
    let mut screen = Screen::default();
    screen.sync_to(
        &mut display,
        &harness.producer.frame(),
        Duration::from_secs(10),
    );

    // Interleave bursts of updates with short reads: the client is always behind.
    for rng_seed in 11..31 {
        harness.producer.run(move |s| {
            let mut rng = Lcg(rng_seed);
            for _ in 0..500 {
                random_update(s, &mut rng, 320, 240);
            }
        });
        display
            .stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        for _ in 0..10 {
            match display.recv() {
                Ok((t, b)) => screen.apply(t, &b),
                Err(_) => break,
            }
        }
    }
    let sent = display.received;
    screen.sync_to(
        &mut display,
        &harness.producer.frame(),
        Duration::from_secs(30),
    );
    assert!(
        display.received < 10_000,
        "updates collapsed: {} messages",
        display.received
    );
    assert!(display.received > sent);
}
