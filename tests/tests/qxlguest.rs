// SPDX-License-Identifier: Apache-2.0
//! The QXL device driven by the project's own small guest (tests/guest/qxlbench.c) instead of
//! Linux: it sets the device up as a driver does, with MSI, and draws 16x16 tiles through the
//! command ring and UPDATE_AREA_ASYNC. It needs no Linux, so these tests run directly on any
//! /dev/kvm, this machine's PVM backend included.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmm_tests::qmp::Qmp;
use vmm_tests::*;

const TIMEOUT: Duration = Duration::from_secs(180);
const WIDTH: usize = 640;
const HEIGHT: usize = 480;
const TILE: usize = 16;
/// Tiles on the guest's 640x480 screen.
const TILES: u64 = (WIDTH / TILE * HEIGHT / TILE) as u64;
/// Draws of the guest's timed phase, before its load phase.
const TIMED_DRAWS: u64 = 1000;

/// The vmm running the guest, with its control socket.
struct Guest {
    session: Session,
    qmp: Qmp,
    dir: PathBuf,
    /// Output offset after the load phase began.
    loading: usize,
}

fn start(test: &str) -> Option<Guest> {
    if !require_kvm(test) {
        return None;
    }
    let elf = qxlbench_guest().unwrap();
    let dir = std::env::temp_dir().join(format!("vmm-qxlguest-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");

    let mut cmd = Command::new(vmm_binary());
    cmd.arg("--kernel").arg(&elf);
    cmd.args(["--memory", "size=256M", "--api-socket"])
        .arg(&socket);
    let mut session = Session::spawn(cmd, TIMEOUT).unwrap();
    let loading = session
        .expect_after(0, "QB-LOAD-START", Duration::from_secs(60))
        .unwrap();
    let qmp = Qmp::connect(&socket, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
    Some(Guest {
        session,
        qmp,
        dir,
        loading,
    })
}

impl Guest {
    fn qxl(&mut self) -> Value {
        self.qmp.call(r#"{"execute":"query-qxl"}"#).unwrap()
    }

    fn interrupts(&mut self) -> u64 {
        self.qxl()["interrupts"].as_u64().unwrap()
    }

    fn drawables(&mut self) -> u64 {
        self.qxl()["engine"]["drawables"].as_u64().unwrap()
    }

    /// A screendump, which must come within 2 s; returns its pixels.
    fn screendump(&mut self) -> Vec<u32> {
        let path = self.dir.join("shot.png");
        let request = serde_json::json!({"execute": "screendump",
                                         "arguments": {"filename": path}});
        let start = Instant::now();
        self.qmp.call(&request.to_string()).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "took {:?}",
            start.elapsed()
        );
        read_png(&path)
    }

    /// Waits until `cond` holds, polling every 20 ms for at most `within`.
    fn wait_for(&mut self, within: Duration, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond(self)
    }

    /// Ends the load phase and checks that the guest finished cleanly.
    fn finish(&mut self) -> u64 {
        self.session.send("x").unwrap();
        let at = self.loading;
        let end = self
            .session
            .expect_after(at, "QB-LOAD-END ", Duration::from_secs(30))
            .unwrap();
        self.session
            .expect_after(end, "QB-DONE", Duration::from_secs(30))
            .unwrap();
        let output = self.session.output();
        let rounds = output[end..].split_whitespace().next().unwrap();
        assert!(!output.contains("QB-ERROR"), "{output}");
        rounds.parse().unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_png(path: &Path) -> Vec<u32> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width as usize, info.height as usize), (WIDTH, HEIGHT));
    buf[..info.buffer_size()]
        .chunks(3)
        .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
        .collect()
}

/// The guest's tile: pixel (x, y) of every tile is 0xff8000 + y * 16 + x.
fn expected_pixel(i: usize) -> u32 {
    let (x, y) = (i % WIDTH % TILE, i / WIDTH % TILE);
    0x00ff_8000 + u32::try_from(y * TILE + x).unwrap()
}

/// C08: screendumps in a loop while the guest draws, then a pause with requests in flight.
#[test]
fn c08_screendumps_under_load_and_a_pause() {
    let Some(mut guest) = start("c08_screendumps_under_load_and_a_pause") else {
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
    let wrong = (0..screen.len()).find(|&i| screen[i] != expected_pixel(i));
    assert_eq!(wrong, None, "every tile shows the guest's bitmap");
    assert_eq!(guest.qxl()["msi"], true, "the guest enabled MSI");
    let _ = guest.qmp.call(r#"{"execute":"quit"}"#);
}
