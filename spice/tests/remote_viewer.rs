// SPDX-License-Identifier: Apache-2.0
//! The real client: remote-viewer (spice-gtk) under Xvfb must show what the producer draws.
//! Skips, saying why, when remote-viewer, Xvfb or ImageMagick's `import` is missing
//! (`apt-get install virt-viewer xvfb imagemagick`), except in CI, where that fails.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use spice::Rect;

/// Kills the child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Counts screen pixels of exactly `rgb` in an RGB dump of the root window.
fn count(dump: &[u8], rgb: [u8; 3]) -> usize {
    dump.chunks_exact(3).filter(|p| *p == rgb).count()
}

#[test]
fn remote_viewer_shows_the_display() {
    let missing: Vec<_> = ["remote-viewer", "Xvfb", "import"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{missing:?} not installed (tests/run.sh installs them as root)"
        );
        eprintln!("skipped: {missing:?} not installed");
        return;
    }

    let h = start(None, 320, 200);
    h.producer.run(|s| {
        s.fill(Rect::new(0, 0, 160, 200), 0x00ff_0000);
        s.fill(Rect::new(160, 0, 160, 100), 0x0000_ff00);
        let blue = vec![0x0000_00ff; 160 * 100];
        s.image(Rect::new(160, 100, 160, 100), &blue);
    });

    let display = format!(":{}", 100 + std::process::id() % 400);
    let xvfb = Command::new("Xvfb")
        .args([
            display.as_str(),
            "-screen",
            "0",
            "800x600x24",
            "-nolisten",
            "tcp",
        ])
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .unwrap();
    sleep(Duration::from_secs(1));
    let uri = format!("spice://127.0.0.1:{}", h.addr.port());
    let _viewer = Command::new("remote-viewer")
        .arg(&uri)
        .env("DISPLAY", &display)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counts = (0, 0, 0);
    while Instant::now() < deadline {
        sleep(Duration::from_millis(500));
        let out = Command::new("import")
            .args(["-window", "root", "-depth", "8", "rgb:-"])
            .env("DISPLAY", &display)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let dump = out.stdout;
        counts = (
            count(&dump, [255, 0, 0]),
            count(&dump, [0, 255, 0]),
            count(&dump, [0, 0, 255]),
        );
        // The window may be scaled a little; most of each area must show its exact colour.
        if counts.0 > 25_000 && counts.1 > 12_000 && counts.2 > 12_000 {
            drop(xvfb);
            return;
        }
    }
    panic!("remote-viewer did not show the display: red, green, blue pixels {counts:?}");
}
