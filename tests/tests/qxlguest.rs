// SPDX-License-Identifier: Apache-2.0
//! The QXL device driven by the project's own small guest (tests/guest/qxlbench.c) instead of
//! Linux: it sets the device up as a driver does, with MSI, and draws 16x16 tiles through the
//! command ring and UPDATE_AREA_ASYNC. It needs no Linux, so these tests run directly on any
//! /dev/kvm, this machine's PVM backend included.
#![allow(clippy::tests_outside_test_module)]

use std::time::Duration;

use vmm_tests::qxlbench::*;

/// C08: screendumps in a loop while the guest draws, then a pause with requests in flight.
#[test]
fn c08_screendumps_under_load_and_a_pause() {
    let Some(mut guest) = start("c08_screendumps_under_load_and_a_pause", &[]) else {
        return;
    };

    for _ in 0..100 {
        guest.screendump();
    }

    guest.qmp.call(r#"{"execute":"stop"}"#).unwrap();
    let status = guest.qmp.call(r#"{"execute":"query-status"}"#).unwrap();
    assert_eq!(status["status"], "paused");
    std::thread::sleep(Duration::from_millis(100));
    let (irqs, draws) = (guest.interrupts(), guest.drawables());
    let frame = guest.screendump();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(guest.interrupts(), irqs, "no interrupt while paused");
    assert_eq!(guest.drawables(), draws, "no drawing while paused");
    assert!(
        guest.screendump() == frame,
        "the paused screen does not change"
    );

    guest.qmp.call(r#"{"execute":"cont"}"#).unwrap();
    let moving = guest.wait_for(Duration::from_secs(5), |g| g.interrupts() > irqs + 10);
    assert!(moving, "the guest runs again after cont");

    // Enough draws to cover the whole screen, then the guest ends its load: had a completion
    // been lost in the pause, it would still be waiting for it.
    let covered = guest.wait_for(Duration::from_secs(60), |g| {
        g.drawables() > TIMED_DRAWS + TILES
    });
    assert!(covered, "the guest drew the whole screen");
    guest.finish();

    let screen = guest.screendump();
    assert_eq!(
        first_wrong_pixel(&screen),
        None,
        "every tile shows the guest's bitmap"
    );
    assert_eq!(guest.qxl()["msi"], true, "the guest enabled MSI");
    let _ = guest.qmp.call(r#"{"execute":"quit"}"#);
}
