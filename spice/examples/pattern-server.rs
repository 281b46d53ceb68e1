// SPDX-License-Identifier: Apache-2.0
//! Serves a synthetic test pattern on 127.0.0.1:<port> without a password, for checking the
//! server against a real client:
//!
//! ```sh
//! cargo run -p spice --example pattern-server -- 5930 &
//! remote-viewer spice://127.0.0.1:5930
//! ```
//!
//! The screen is 640x480: eight vertical colour bars on the top half, a gradient on the
//! bottom half, and a square at (16, 16) that changes colour every second (DRAW_FILL).
//! Keyboard and mouse events are printed on stderr.

use std::sync::mpsc;
use std::time::Duration;

use spice::{CursorShape, DisplaySink, InputSink, Rect, SpiceConfig, SpiceServer};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const BARS: [u32; 8] = [
    0x00ff_ffff,
    0x00ff_ff00,
    0x0000_ffff,
    0x0000_ff00,
    0x00ff_00ff,
    0x00ff_0000,
    0x0000_00ff,
    0x0000_0000,
];
const BLINK: [u32; 2] = [0x00ff_8000, 0x0000_80ff];
const SQUARE: Rect = Rect::new(16, 16, 64, 64);

/// Prints every input event.
struct PrintInput;

impl InputSink for PrintInput {
    fn key_down(&mut self, scancode: u32) {
        eprintln!("key down {scancode:#x}");
    }
    fn key_up(&mut self, scancode: u32) {
        eprintln!("key up {scancode:#x}");
    }
    fn mouse_motion(&mut self, dx: i32, dy: i32, buttons: u32) {
        eprintln!("motion {dx} {dy} buttons {buttons:#x}");
    }
    fn mouse_button(&mut self, button: u32, pressed: bool, buttons: u32) {
        eprintln!("button {button} pressed {pressed} buttons {buttons:#x}");
    }
}

/// The pattern's pixel at (x, y).
fn pattern(x: u32, y: u32) -> u32 {
    if y < HEIGHT / 2 {
        return BARS[(x * 8 / WIDTH) as usize];
    }
    let r = x * 255 / (WIDTH - 1);
    let g = (y - HEIGHT / 2) * 255 / (HEIGHT / 2 - 1);
    (r << 16) | (g << 8) | 0x40
}

fn fill(frame: &mut [u32], rect: Rect, color: u32) {
    for y in rect.y..rect.y + rect.h as i32 {
        let start = (y as u32 * WIDTH) as usize + rect.x as usize;
        frame[start..start + rect.w as usize].fill(color);
    }
}

fn send_rect(sink: &DisplaySink, frame: &[u32], rect: Rect) {
    let mut pixels = Vec::with_capacity((rect.w * rect.h) as usize);
    for y in rect.y..rect.y + rect.h as i32 {
        let start = (y as u32 * WIDTH) as usize + rect.x as usize;
        pixels.extend_from_slice(&frame[start..start + rect.w as usize]);
    }
    sink.image(rect, &pixels);
}

fn arrow_cursor() -> CursorShape {
    let (w, h) = (16u16, 16u16);
    let argb = (0..h)
        .flat_map(|y| {
            (0..w).map(move |x| {
                if x <= y {
                    0xff00_0000 | (0x00ff_ffff * u32::from(x == y))
                } else {
                    0
                }
            })
        })
        .collect();
    CursorShape {
        width: w,
        height: h,
        hot_x: 0,
        hot_y: 0,
        argb,
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(5930);
    let config = SpiceConfig {
        addr: [127, 0, 0, 1].into(),
        port,
        password: None,
    };
    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    let refresh = Box::new(move || {
        let _ = wake_tx.send(());
    });
    let (server, sink) = SpiceServer::start(config, Box::new(PrintInput), refresh).unwrap();
    eprintln!("pattern-server: listening on {}", server.local_addr());

    let mut frame: Vec<u32> = (0..HEIGHT)
        .flat_map(|y| (0..WIDTH).map(move |x| pattern(x, y)))
        .collect();
    sink.primary_created(WIDTH, HEIGHT);
    sink.cursor_set(&arrow_cursor(), 320, 240, true);

    let mut tick = 0usize;
    let mut owed = Vec::new();
    loop {
        match wake_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => {
                sink.take_refresh(&mut owed);
                for rect in &owed {
                    send_rect(&sink, &frame, *rect);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tick += 1;
                let color = BLINK[tick % 2];
                fill(&mut frame, SQUARE, color);
                sink.fill(SQUARE, color);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}
