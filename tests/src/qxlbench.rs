// SPDX-License-Identifier: Apache-2.0
//! The vmm running the project's own small QXL guest (tests/guest/qxlbench.c) directly on
//! /dev/kvm, with its control socket: the harness of the tests that need no Linux.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::qmp::Qmp;
use crate::{qxlbench_guest, require_kvm, vmm_binary, Session};

const TIMEOUT: Duration = Duration::from_secs(180);
/// The guest's screen.
pub const WIDTH: usize = 640;
/// The guest's screen.
pub const HEIGHT: usize = 480;
/// The guest's tiles are this many pixels square.
pub const TILE: usize = 16;
/// Tiles on the guest's screen.
pub const TILES: u64 = (WIDTH / TILE * HEIGHT / TILE) as u64;
/// Draws of the guest's timed phase, before its load phase.
pub const TIMED_DRAWS: u64 = 1000;

/// The vmm running the guest, with its control socket.
pub struct Guest {
    /// The vmm process.
    pub session: Session,
    /// Its control socket.
    pub qmp: Qmp,
    /// A scratch folder, removed at the end.
    pub dir: PathBuf,
    /// Output offset after the load phase began.
    loading: usize,
}

/// Starts the guest under the vmm with `extra` vmm arguments and waits for its load phase;
/// None (with a line saying why) when /dev/kvm cannot be used outside CI.
pub fn start(test: &str, extra: &[String]) -> Option<Guest> {
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
    cmd.args(extra);
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
    /// query-qxl's reply.
    pub fn qxl(&mut self) -> Value {
        self.qmp.call(r#"{"execute":"query-qxl"}"#).unwrap()
    }

    /// Interrupts the device raised.
    pub fn interrupts(&mut self) -> u64 {
        self.qxl()["interrupts"].as_u64().unwrap()
    }

    /// Drawables the device rendered.
    pub fn drawables(&mut self) -> u64 {
        self.qxl()["engine"]["drawables"].as_u64().unwrap()
    }

    /// A screendump, which must come within 2 s; returns its pixels.
    pub fn screendump(&mut self) -> Vec<u32> {
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
    pub fn wait_for(&mut self, within: Duration, mut cond: impl FnMut(&mut Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond(self)
    }

    /// Ends the load phase, checks that the guest finished cleanly and returns its load
    /// rounds.
    pub fn finish(&mut self) -> u64 {
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

/// The pixels of a 640x480 PNG as 0x00RRGGBB.
pub fn read_png(path: &Path) -> Vec<u32> {
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
pub fn expected_pixel(i: usize) -> u32 {
    let (x, y) = (i % WIDTH % TILE, i / WIDTH % TILE);
    0x00ff_8000 + u32::try_from(y * TILE + x).unwrap()
}

/// Whether `screen` shows the guest's tile everywhere; the index of the first wrong pixel if not.
pub fn first_wrong_pixel(screen: &[u32]) -> Option<usize> {
    (0..screen.len()).find(|&i| screen[i] != expected_pixel(i))
}
