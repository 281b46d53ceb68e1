// SPDX-License-Identifier: Apache-2.0
//! A user's view: the Debian guest boots under the vmm with `--spice`; remote-viewer (Debian's
//! virt-viewer, spice-gtk) under Xvfb shows its console, text typed into the viewer with
//! xdotool runs in the guest's shell, a mouse click reaches the guest's mouse driver, and
//! extended keys from a SPICE client arrive as the right key codes (C20).
//!
//! In the nested-KVM test host the vmm listens on the test host's own address and the port is
//! forwarded to this machine's 127.0.0.1, where the viewer and the test's own SPICE client run.
//! The viewer's screenshot is compared with the test client's screen, which tests/spice.rs
//! checks against `screendump` pixel for pixel.
#![allow(clippy::tests_outside_test_module)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm_tests::spice_client::{ImageCompression, Options, SpiceClient};
use vmm_tests::*;

const TIMEOUT: Duration = Duration::from_secs(480);
const WIDTH: usize = 1024;
const HEIGHT: usize = 768;
const TEXT_TYPED: &str = "typed-ok-spice";

/// Kills the process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tools this test drives; outside CI a missing one skips the test.
fn have_tools(test: &str) -> bool {
    let missing: Vec<&str> = ["remote-viewer", "Xvfb", "xdotool", "import"]
        .into_iter()
        .filter(|tool| {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status();
            !found.is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{missing:?} not installed (tests/run.sh installs them as root)");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {why}"
    );
    eprintln!("{test}: skipped: {why}");
    false
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Runs an X client command on `display` and returns its stdout.
fn x(display: &str, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .env("DISPLAY", display)
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    out.stdout
}

/// The root window as 0x00RRGGBB pixels.
fn screenshot(display: &str) -> Vec<u32> {
    let rgb = x(
        display,
        "import",
        &["-window", "root", "-depth", "8", "rgb:-"],
    );
    rgb.chunks_exact(3)
        .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
        .collect()
}

/// Where the guest's screen sits in the viewer's screenshot (the viewer draws a header bar
/// above it), and the share of the visible guest pixels that match there.
fn best_match(shot: &[u32], guest: &[u32]) -> (usize, f64) {
    let score = |dy: usize, step: usize| {
        let rows = (0..HEIGHT - dy).step_by(step);
        let (mut same, mut all) = (0usize, 0usize);
        for y in rows {
            let shot_row = &shot[(y + dy) * WIDTH..(y + dy + 1) * WIDTH];
            let guest_row = &guest[y * WIDTH..(y + 1) * WIDTH];
            same += shot_row
                .iter()
                .zip(guest_row)
                .filter(|(a, b)| a == b)
                .count();
            all += WIDTH;
        }
        same as f64 / all as f64
    };
    let dy = (0..=120)
        .max_by(|&a, &b| score(a, 7).total_cmp(&score(b, 7)))
        .unwrap();
    (dy, score(dy, 1))
}

/// Non-black pixels: the console's text.
fn lit(pixels: &[u32]) -> usize {
    pixels.iter().filter(|&&p| p != 0).count()
}

#[test]
fn remote_viewer_shows_the_console_types_and_clicks_and_keys_arrive() {
    let test = "remote_viewer_shows_the_console_types_and_clicks_and_keys_arrive";
    let Some(place) = require_boot_place(test) else {
        return;
    };
    if !have_tools(test) {
        return;
    }

    let port = free_port();
    let listen = match place {
        Place::Direct => "127.0.0.1",
        Place::TestHost => "10.0.2.15",
    };
    let mut args = guest_args(1, TEST_CMDLINE);
    args.push("--spice".into());
    args.push(format!("port={port},addr={listen},disable-ticketing=on"));
    let mut cmd = command_in(place, &vmm_binary(), &args, TIMEOUT);
    cmd.env("TEST_HOST_FORWARD", port.to_string());
    let mut vmm = Session::spawn(cmd, TIMEOUT).unwrap();
    let ready = vmm
        .expect_after(0, "VMM-GUEST-READY", Duration::from_secs(300))
        .unwrap();

    // The test's own client waits for the shell's prompt on the guest's console.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let options = Options {
        password: None,
        timeout: Duration::from_secs(60),
        compression: Some(ImageCompression::Lz4),
    };
    let client = SpiceClient::connect_with(addr, &options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.screen().is_none_or(|s| lit(&s.pixels) < 2000) {
        assert!(Instant::now() < deadline, "no console text over SPICE");
        std::thread::sleep(Duration::from_millis(500));
    }
    client
        .wait_quiet(Duration::from_millis(100), Duration::from_secs(60))
        .unwrap();
    let guest = client.screen().unwrap().pixels;
    drop(client);

    // remote-viewer takes the session over and shows the same screen.
    let display = format!(":{}", 500 + std::process::id() % 400);
    let _xvfb = Killed(
        Command::new("Xvfb")
            .args([&display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let _viewer = Killed(
        Command::new("remote-viewer")
            .args(["--kiosk", &format!("spice://127.0.0.1:{port}")])
            .env("DISPLAY", &display)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut dy, mut matched) = (0, 0.0);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let shot = screenshot(&display);
        if shot.len() != WIDTH * HEIGHT || lit(&shot) < 2000 {
            continue;
        }
        (dy, matched) = best_match(&shot, &guest);
        if matched > 0.995 {
            break;
        }
    }
    assert!(
        matched > 0.995,
        "the viewer shows the guest's screen: {matched:.4} at dy {dy}"
    );

    // Keys typed into the viewer reach the shell on the guest's tty1.
    let window =
        String::from_utf8(x(&display, "xdotool", &["search", "--name", "spice://"])).unwrap();
    let window = window
        .lines()
        .next()
        .expect("the viewer's window")
        .to_string();
    x(&display, "xdotool", &["windowfocus", "--sync", &window]);
    let command = format!("echo {TEXT_TYPED} >/dev/ttyS0");
    x(&display, "xdotool", &["type", "--delay", "60", &command]);
    x(&display, "xdotool", &["key", "Return"]);
    vmm.expect_after(ready, TEXT_TYPED, Duration::from_secs(90))
        .unwrap();

    // A click (the first one grabs the pointer in SPICE's server mouse mode) reaches the
    // guest's mouse device as BTN_LEFT pressed. The markers are spelled so that the serial
    // console's echo of the command line does not match them.
    vmm.send(
        "for d in /sys/class/input/event*; do case \"$(cat $d/device/name)\" in *Mouse*) \
         cat /dev/input/${d##*/} > /tmp/mouse.bin & ;; esac; done; \
         echo MOUSE-WATCH-$((6*7))\n",
    )
    .unwrap();
    let watching = vmm
        .expect_after(ready, "MOUSE-WATCH-42", Duration::from_secs(60))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for (x_pos, y_pos) in [("300", "300"), ("340", "320")] {
        x(&display, "xdotool", &["mousemove", x_pos, y_pos]);
        std::thread::sleep(Duration::from_millis(500));
        x(&display, "xdotool", &["click", "1"]);
        std::thread::sleep(Duration::from_secs(1));
    }
    vmm.send(
        "n=0; od -An -v -tu2 -w24 /tmp/mouse.bin > /tmp/mouse.txt; \
         while read a b c d e f g h kind code value rest; do \
         [ \"$kind $code $value\" = '1 272 1' ] && n=$((n+1)); done < /tmp/mouse.txt; \
         echo MOUSE-PRESS''ES=$n.\n",
    )
    .unwrap();
    let at = vmm
        .expect_after(watching, "MOUSE-PRESSES=", Duration::from_secs(60))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let output = vmm.output();
    let count: String = output[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let presses = count.parse::<u32>().unwrap_or(0);
    let done_mouse = at;
    assert!(
        presses >= 1,
        "no BTN_LEFT press reached the guest:\n{}",
        &output[watching..]
    );

    // C20: extended keys sent by a SPICE client arrive as the right Linux key codes on the
    // guest's AT keyboard, each pressed and released once.
    let client = SpiceClient::connect_with(addr, &options).unwrap();
    vmm.send(
        "for d in /sys/class/input/event*; do case \"$(cat $d/device/name)\" in \
         *'AT Translated'*) cat /dev/input/${d##*/} > /tmp/kbd.bin & ;; esac; done; \
         echo KBD-WATCH-$((6*7))\n",
    )
    .unwrap();
    let watching = vmm
        .expect_after(done_mouse, "KBD-WATCH-42", Duration::from_secs(60))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for (scancode, _) in EXTENDED_KEYS {
        client.key(scancode, true).unwrap();
        client.key(scancode, false).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_secs(3));
    vmm.send(
        "od -An -v -tu2 -w24 /tmp/kbd.bin > /tmp/kbd.txt; keys=; \
         while read a b c d e f g h kind code value rest; do \
         [ \"$kind\" = 1 ] && [ \"$value\" != 2 ] && keys=\"$keys $code:$value\"; \
         done < /tmp/kbd.txt; echo KEY''S=$keys.\n",
    )
    .unwrap();
    let at = vmm
        .expect_after(watching, "KEYS=", Duration::from_secs(60))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let output = vmm.output();
    let seen: String = output[at..].chars().take_while(|&c| c != '.').collect();
    let want: Vec<String> = EXTENDED_KEYS
        .iter()
        .flat_map(|(_, code)| [format!("{code}:1"), format!("{code}:0")])
        .collect();
    assert_eq!(
        seen.split_whitespace().collect::<Vec<_>>(),
        want,
        "key events in the guest"
    );
}

/// C20's keys as SPICE sends them (set 1, bytes least significant first: 0x48e0 is E0 48)
/// and the Linux key code each must become.
const EXTENDED_KEYS: [(u32, u16); 11] = [
    (0x48e0, 103), // Up
    (0x4be0, 105), // Left
    (0x1de0, 97),  // Right Ctrl
    (0x38e0, 100), // Right Alt
    (0x48, 72),    // keypad 8
    (0x1ce0, 96),  // keypad Enter
    (0x35e0, 98),  // keypad /
    (0x52e0, 110), // Insert
    (0x53e0, 111), // Delete
    (0x47e0, 102), // Home
    (0x4fe0, 107), // End
];
