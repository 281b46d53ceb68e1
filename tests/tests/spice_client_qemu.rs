// SPDX-License-Identifier: Apache-2.0
//! The SPICE test client against a real spice-server: QEMU under TCG with a QXL VGA card and
//! no disk, so SeaBIOS draws its text screen. The client's rebuilt screen must equal QEMU's
//! own `screendump` pixel for pixel; passwords, the keyboard and the mouse are checked too.
//!
//! QEMU listens on 127.0.0.1 only, has no network device (-nodefaults), and is killed when
//! each test ends. Without QEMU and its spice module the tests skip, except in CI.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmm_tests::spice_client::{ClientError, ImageCompression, Options, Screen, SpiceClient};
use vmm_tests::{repo_root, Session};

const QEMU: &str = "qemu-system-x86_64";
/// QEMU is killed after this, whatever the test is doing.
const QEMU_LIFETIME: Duration = Duration::from_secs(120);
const TIMEOUT: Duration = Duration::from_secs(30);
/// Shorter than the VGA text cursor's blink (about 266 ms per phase).
const QUIET: Duration = Duration::from_millis(120);
/// Image compression settings that keep spice-server to images the client decodes.
const SPICE_BASE: &str =
    "addr=127.0.0.1,streaming-video=off,jpeg-wan-compression=never,zlib-glz-wan-compression=never";

/// Whether QEMU with its spice module and QXL is here; None means skip (never in CI).
fn require_qemu(test: &str) -> Option<()> {
    let probe = |args: &[&str], needle: &str| {
        Command::new(QEMU)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
            .unwrap_or(false)
    };
    let spice = [
        "-machine",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-spice",
        "help",
    ];
    let why = if !probe(&["-version"], "QEMU") {
        format!("{QEMU} is not installed")
    } else if !probe(&spice, "spice options") {
        "QEMU's spice module is missing (qemu-system-modules-spice)".into()
    } else if !probe(&["-device", "help"], "qxl-vga") {
        "QEMU has no qxl-vga device".into()
    } else {
        return Some(());
    };

    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}");
    }
    eprintln!("{test}: skipped: {why}");
    None
}

/// A QEMU process with SPICE on 127.0.0.1 and a QMP socket; killed on drop.
struct Qemu {
    session: Session,
    spice: SocketAddr,
    qmp: PathBuf,
    dir: PathBuf,
}

impl Qemu {
    /// Starts QEMU with `-spice {SPICE_BASE},port=..,{spice}` and `extra` arguments.
    fn start(name: &str, spice: &str, extra: &[&str]) -> Result<Qemu> {
        let dir = repo_root().join(format!("target/spice-client-qemu/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let qmp = dir.join("qmp.sock");
        let port = free_port()?;

        let mut cmd = Command::new(QEMU);
        cmd.args(["-accel", "tcg", "-m", "64", "-nodefaults", "-vga", "qxl"])
            .args(["-display", "none", "-monitor", "none", "-serial", "none"])
            .arg("-spice")
            .arg(format!("{SPICE_BASE},port={port},{spice}"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .args(extra);
        let session = Session::spawn(cmd, QEMU_LIFETIME)?;
        let spice = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Qemu {
            session,
            spice,
            qmp,
            dir,
        })
    }

    /// Connects the SPICE client, retrying while QEMU is not listening yet.
    fn connect(&mut self, password: Option<&str>) -> Result<SpiceClient, ClientError> {
        self.connect_with(password, None)
    }

    /// Like `connect`, asking for `compression`.
    fn connect_with(
        &mut self,
        password: Option<&str>,
        compression: Option<ImageCompression>,
    ) -> Result<SpiceClient, ClientError> {
        let options = Options {
            password: password.map(String::from),
            timeout: TIMEOUT,
            compression,
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match SpiceClient::connect_with(self.spice, &options) {
                Err(ClientError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    /// Takes a QMP screendump as PNG and reads it back.
    fn screendump(&self, name: &str) -> Result<Screen> {
        let path = self.dir.join(format!("{name}.png"));
        let args = format!(r#"{{"filename": "{}", "format": "png"}}"#, path.display());
        qmp(&self.qmp, "screendump", &args)
            .with_context(|| format!("QEMU output:\n{}", self.session.output()))?;
        read_png(&path)
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs one QMP command on a fresh connection and waits for its reply.
fn qmp(socket: &Path, command: &str, arguments: &str) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).context("connect to QMP"),
        }
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;

    read_reply(&mut reader, "QMP")?;
    writer.write_all(b"{\"execute\": \"qmp_capabilities\"}\n")?;
    read_reply(&mut reader, "return")?;
    writeln!(
        writer,
        r#"{{"execute": "{command}", "arguments": {arguments}}}"#
    )?;
    read_reply(&mut reader, "return")
}

/// Reads QMP lines, skipping events, until one containing `want`; an error reply fails.
fn read_reply(reader: &mut impl BufRead, want: &str) -> Result<()> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("QMP closed the connection");
        }
        if line.contains("\"error\"") {
            bail!("QMP error: {line}");
        }
        if line.contains(want) {
            return Ok(());
        }
    }
}

fn read_png(path: &Path) -> Result<Screen> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut reader = png::Decoder::new(BufReader::new(file)).read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG size")?];
    let info = reader.next_frame(&mut buf)?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => bail!("unexpected PNG colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
        .collect();
    Ok(Screen {
        width: info.width,
        height: info.height,
        pixels,
    })
}

/// More pixels than the blinking text cursor covers.
const CURSOR_PIXELS: usize = 9 * 16;

/// How many pixels differ (all of them when the sizes differ).
fn differing_pixels(a: &Screen, b: &Screen) -> usize {
    if (a.width, a.height) != (b.width, b.height) {
        return a.pixels.len().max(b.pixels.len());
    }
    a.pixels
        .iter()
        .zip(&b.pixels)
        .filter(|(x, y)| x != y)
        .count()
}

/// Where two screens differ: the count of differing pixels and the first one.
fn difference(got: &Screen, want: &Screen) -> Option<String> {
    if (got.width, got.height) != (want.width, want.height) {
        return Some(format!(
            "size {}x{} vs {}x{}",
            got.width, got.height, want.width, want.height
        ));
    }
    let diffs: Vec<usize> = (0..got.pixels.len())
        .filter(|&i| got.pixels[i] != want.pixels[i])
        .collect();
    let &first = diffs.first()?;
    let width = usize::try_from(got.width).unwrap();
    Some(format!(
        "{} pixels differ, first at ({}, {}): {:06x} vs {:06x}",
        diffs.len(),
        first % width,
        first / width,
        got.pixels[first],
        want.pixels[first]
    ))
}

/// Waits until the client is quiet, takes a screendump, waits again and compares; the text
/// cursor blinks, so a blink between the two is retried. Returns the matching screen.
fn screen_matching_screendump(qemu: &Qemu, client: &SpiceClient, name: &str) -> Result<Screen> {
    let deadline = Instant::now() + TIMEOUT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut attempt = 0;
    loop {
        client.wait_quiet(QUIET, left())?;
        let dump = qemu.screendump(name)?;
        client.wait_quiet(QUIET, left())?;
        let screen = client.screen().context("no primary surface")?;
        let Some(why) = difference(&screen, &dump) else {
            return Ok(screen);
        };

        screen.write_png(&qemu.dir.join(format!("{name}-client.png")))?;
        attempt += 1;
        if left().is_zero() {
            bail!("the client's screen never matched the screendump in {attempt} tries: {why}");
        }
    }
}

/// Pixels that are not black: a screen with text has many.
fn lit_pixels(screen: &Screen) -> usize {
    screen.pixels.iter().filter(|&&p| p != 0).count()
}

/// SeaBIOS's final text screen, without a disk: boot attempts and "No bootable device.".
/// QEMU's default image compression (auto_glz) is overridden by the client's preference.
fn boot_screen_matches(name: &str, compression: ImageCompression, want_kind: u8) -> Result<()> {
    let mut qemu = Qemu::start(name, "disable-ticketing=on", &[])?;
    let client = qemu.connect_with(None, Some(compression))?;

    let screen = screen_matching_screendump(&qemu, &client, name)?;
    assert!(lit_pixels(&screen) > 1000, "the boot screen has text");
    let stats = client.stats();
    assert!(
        stats.image_kinds.get(&want_kind).is_some_and(|&n| n > 0),
        "no image of type {want_kind} among {:?}",
        stats.image_kinds
    );
    assert!(client.failure().is_none());
    Ok(())
}

#[test]
fn raw_bitmaps_rebuild_the_screendump() {
    if require_qemu("raw_bitmaps_rebuild_the_screendump").is_none() {
        return;
    }
    boot_screen_matches("raw", ImageCompression::Off, 0).unwrap();
}

#[test]
fn lz4_images_rebuild_the_screendump() {
    if require_qemu("lz4_images_rebuild_the_screendump").is_none() {
        return;
    }
    boot_screen_matches("lz4", ImageCompression::Lz4, 109).unwrap();
}

#[test]
fn password_secret_right_and_wrong() {
    if require_qemu("password_secret_right_and_wrong").is_none() {
        return;
    }
    let secret = ["-object", "secret,id=spicepw,data=hunter2"];
    let spice = "password-secret=spicepw,image-compression=off";
    let mut qemu = Qemu::start("password", spice, &secret).unwrap();

    let client = qemu.connect(Some("hunter2")).unwrap();
    client.wait_quiet(QUIET, TIMEOUT).unwrap();
    assert!(client.screen().is_some());
    drop(client);

    let err = qemu.connect(Some("hunter3")).err().unwrap();
    assert!(matches!(err, ClientError::PermissionDenied), "{err:?}");
    let err = qemu.connect(None).err().unwrap();
    assert!(matches!(err, ClientError::PermissionDenied), "{err:?}");
}

/// SeaBIOS waits at "Press ESC for boot menu."; ESC typed over SPICE opens the menu, and the
/// screen over SPICE follows. Mouse motions are acknowledged in bunches of four.
#[test]
fn keyboard_opens_the_boot_menu_and_mouse_motion_is_acked() {
    if require_qemu("keyboard_opens_the_boot_menu_and_mouse_motion_is_acked").is_none() {
        return;
    }
    let boot = ["-boot", "menu=on,splash-time=60000"];
    let spice = "disable-ticketing=on,image-compression=off";
    let mut qemu = Qemu::start("keyboard", spice, &boot).unwrap();
    let client = qemu.connect(None).unwrap();

    let prompt = wait_for_prompt(&qemu, &client).unwrap();
    client.key(0x01, true).unwrap();
    client.key(0x01, false).unwrap();
    let menu = wait_for_change(&qemu, &client, &prompt).unwrap();
    assert!(
        lit_pixels(&menu) > lit_pixels(&prompt),
        "the menu adds text"
    );

    for _ in 0..8 {
        client.mouse_motion(3, -2, 0).unwrap();
    }
    let stats = client
        .wait_until("2 motion acks", TIMEOUT, |s| s.motion_acks == 2)
        .unwrap();
    assert_eq!(stats.motions_sent, 8);
    assert!(client.cursor().initialized, "the cursor channel sent INIT");
}

/// The screen once SeaBIOS shows its prompt: text, unchanged between two screendumps a
/// second apart (SeaBIOS no longer printing).
fn wait_for_prompt(qemu: &Qemu, client: &SpiceClient) -> Result<Screen> {
    let deadline = Instant::now() + TIMEOUT;
    let mut previous: Option<Screen> = None;
    loop {
        let screen = screen_matching_screendump(qemu, client, "prompt")?;
        if lit_pixels(&screen) > 1000 && previous.as_ref() == Some(&screen) {
            return Ok(screen);
        }
        if Instant::now() > deadline {
            bail!("SeaBIOS's boot menu prompt never settled");
        }
        previous = Some(screen);
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The first screen different from `before` that also matches a screendump.
fn wait_for_change(qemu: &Qemu, client: &SpiceClient, before: &Screen) -> Result<Screen> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let screen = screen_matching_screendump(qemu, client, "menu")?;
        if differing_pixels(&screen, before) > CURSOR_PIXELS {
            return Ok(screen);
        }
        if Instant::now() > deadline {
            bail!("the screen did not change after ESC");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
