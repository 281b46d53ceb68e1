// SPDX-License-Identifier: Apache-2.0
//! A minimal SPICE client and a synthetic display producer for the integration tests. The
//! client is written from the protocol reference, independently of the server's code.

#![allow(dead_code)]
// Sizes here are tiny test values.
#![allow(clippy::cast_possible_truncation)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use spice::{DisplaySink, InputSink, Rect, SpiceConfig, SpiceServer};

pub const MAIN: u8 = 1;
pub const DISPLAY: u8 = 2;
pub const INPUTS: u8 = 3;
pub const CURSOR: u8 = 4;
/// AUTH_SELECTION | MINI_HEADER | AUTH_SASL, what spice-gtk 0.42 on Debian sends.
pub const GTK_COMMON_CAPS: u32 = 0x0d;
/// Display caps with LZ4 (bit 5) as remote-viewer sends them on this machine.
pub const GTK_DISPLAY_CAPS: u32 = 0x6fbf;

/// Writes little-endian u32 words.
fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// What a link attempt ended with.
#[derive(Debug)]
pub enum LinkOutcome {
    /// Linked; the socket and whether mini headers are in use.
    Linked(Client),
    /// The reply's error field was not 0.
    ReplyError(u32),
    /// The ticket was refused with this result.
    AuthError(u32),
}

/// Links one channel.
pub fn link(
    addr: SocketAddr,
    channel_type: u8,
    connection_id: u32,
    common_caps: u32,
    channel_caps: &[u32],
    password: &str,
) -> io::Result<LinkOutcome> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let size = 18 + 4 * (1 + channel_caps.len() as u32);
    let mut msg = words(&[0x5144_4552, 2, 2, size, connection_id]);
    msg.extend_from_slice(&[channel_type, 0]);
    msg.extend(words(&[1, channel_caps.len() as u32, 18, common_caps]));
    msg.extend(words(channel_caps));
    s.write_all(&msg)?;

    let mut header = [0u8; 16];
    s.read_exact(&mut header)?;
    assert_eq!(
        &header[..12],
        &[0x52, 0x45, 0x44, 0x51, 2, 0, 0, 0, 2, 0, 0, 0]
    );
    let mut reply = vec![0u8; u32_at(&header, 12) as usize];
    s.read_exact(&mut reply)?;
    let error = u32_at(&reply, 0);
    if error != 0 {
        return Ok(LinkOutcome::ReplyError(error));
    }
    let key = RsaPublicKey::from_public_key_der(&reply[4..166]).expect("SPKI DER key");
    let (n_common, caps_off) = (u32_at(&reply, 166) as usize, u32_at(&reply, 174) as usize);
    assert_eq!(n_common, 1);
    let server_common = u32_at(&reply, caps_off);

    if common_caps & 1 != 0 && server_common & 1 != 0 {
        assert_ne!(server_common & 2, 0, "server offers AUTH_SPICE");
        assert_eq!(server_common & 4, 0, "server must not offer SASL");
        s.write_all(&1u32.to_le_bytes())?;
    }
    let mut plain = password.as_bytes().to_vec();
    plain.push(0);
    let ticket = key
        .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &plain)
        .unwrap();
    assert_eq!(ticket.len(), 128);
    s.write_all(&ticket)?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result)?;
    let result = u32::from_le_bytes(result);
    if result != 0 {
        return Ok(LinkOutcome::AuthError(result));
    }
    let mini = common_caps & 8 != 0 && server_common & 8 != 0;
    Ok(LinkOutcome::Linked(Client::new(s, mini)))
}

/// A linked channel: framing, the ack window and pings, like spice-gtk does them.
#[derive(Debug)]
pub struct Client {
    pub stream: TcpStream,
    mini: bool,
    serial: u64,
    ack_window: u32,
    ack_left: u32,
    pub received: usize,
    buf: Vec<u8>,
}

impl Client {
    fn new(stream: TcpStream, mini: bool) -> Self {
        Client {
            stream,
            mini,
            serial: 0,
            ack_window: 0,
            ack_left: 0,
            received: 0,
            buf: Vec::new(),
        }
    }

    /// Sends one message.
    pub fn send(&mut self, msg_type: u16, body: &[u8]) -> io::Result<()> {
        self.serial += 1;
        let mut frame = Vec::new();
        if !self.mini {
            frame.extend_from_slice(&self.serial.to_le_bytes());
        }
        frame.extend_from_slice(&msg_type.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        if !self.mini {
            frame.extend_from_slice(&0u32.to_le_bytes());
        }
        frame.extend_from_slice(body);
        self.stream.write_all(&frame)
    }

    /// Reads until `need` bytes are buffered; a timeout keeps what was read.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < need {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    /// Receives one message, answering SET_ACK, PING and the ack window on the way. A read
    /// timeout returns an error but loses nothing.
    pub fn recv(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let head = if self.mini { 6 } else { 18 };
        self.fill(head)?;
        let off = if self.mini { 0 } else { 8 };
        let msg_type = u16::from_le_bytes([self.buf[off], self.buf[off + 1]]);
        let size = u32_at(&self.buf, off + 2) as usize;
        self.fill(head + size)?;
        let body = self.buf[head..head + size].to_vec();
        self.buf.drain(..head + size);
        self.received += 1;

        if self.ack_left > 0 {
            self.ack_left -= 1;
            if self.ack_left == 0 {
                self.send(2, &[])?;
                self.ack_left = self.ack_window;
            }
        }
        match msg_type {
            3 => {
                self.ack_window = u32_at(&body, 4);
                self.ack_left = self.ack_window;
                let generation = body[..4].to_vec();
                self.send(1, &generation)?;
            }
            4 => {
                let pong = body[..12].to_vec();
                self.send(3, &pong)?;
            }
            _ => {}
        }
        Ok((msg_type, body))
    }

    /// Receives until a message of `msg_type` arrives.
    pub fn recv_type(&mut self, msg_type: u16) -> io::Result<Vec<u8>> {
        loop {
            let (t, body) = self.recv()?;
            if t == msg_type {
                return Ok(body);
            }
        }
    }

    /// Returns whether the server closed the connection within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        closed_within(&mut self.stream, within)
    }
}

/// Returns whether the peer closed `s` (EOF or reset) within `within`, discarding data.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Links the main channel, reads MAIN_INIT and attaches; returns the client and session id.
pub fn connect_main(addr: SocketAddr, password: &str) -> (Client, u32) {
    let LinkOutcome::Linked(mut main) =
        link(addr, MAIN, 0, GTK_COMMON_CAPS, &[0xf], password).unwrap()
    else {
        panic!("main channel not linked");
    };
    let init = main.recv_type(103).unwrap();
    assert_eq!(init.len(), 32);
    let session = u32_at(&init, 0);
    main.send(104, &[]).unwrap();
    let list = main.recv_type(104).unwrap();
    assert_eq!(list, [3, 0, 0, 0, 2, 0, 3, 0, 4, 0]);
    (main, session)
}

/// Links a channel of the session and panics if that fails.
pub fn connect(addr: SocketAddr, kind: u8, session: u32, caps: &[u32], pw: &str) -> Client {
    match link(addr, kind, session, GTK_COMMON_CAPS, caps, pw).unwrap() {
        LinkOutcome::Linked(c) => c,
        other => panic!("channel {kind} not linked: {other:?}"),
    }
}

/// Links the display channel and sends DISPLAY_INIT.
pub fn connect_display(addr: SocketAddr, session: u32, caps: u32, pw: &str) -> Client {
    let mut display = connect(addr, DISPLAY, session, &[caps], pw);
    let mut init = vec![1u8];
    init.extend_from_slice(&20_971_520i64.to_le_bytes());
    init.push(1);
    init.extend_from_slice(&8_388_608i32.to_le_bytes());
    display.send(101, &init).unwrap();
    display
}

/// The client's copy of the primary surface, rebuilt from display messages.
#[derive(Debug, Default, Clone)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
    pub marked: bool,
    /// (message type, image type) pairs seen, image type 255 for non-images.
    pub seen: Vec<(u16, u8)>,
}

/// A SPICE Rect (top, left, bottom, right) as (x, y, w, h).
fn rect_at(b: &[u8], off: usize) -> (i32, i32, i32, i32) {
    let (top, left) = (i32_at(b, off), i32_at(b, off + 4));
    let (bottom, right) = (i32_at(b, off + 8), i32_at(b, off + 12));
    (left, top, right - left, bottom - top)
}

impl Screen {
    /// Applies one display message.
    pub fn apply(&mut self, t: u16, b: &[u8]) {
        match t {
            314 => {
                assert_eq!(u32_at(b, 0), 0);
                self.width = u32_at(b, 4);
                self.height = u32_at(b, 8);
                assert_eq!(u32_at(b, 12), 32, "32_xRGB");
                assert_eq!(u32_at(b, 16), 1, "primary");
                self.pixels = vec![0; (self.width * self.height) as usize];
                self.marked = false;
            }
            315 => {
                self.width = 0;
                self.height = 0;
                self.pixels.clear();
                self.marked = false;
            }
            102 => {
                assert!(self.width > 0, "MARK without a surface");
                self.marked = true;
            }
            302 => self.fill(b),
            104 => self.copy_bits(b),
            304 => self.draw_copy(b),
            _ => return,
        }
        if t != 304 {
            self.seen.push((t, 255));
        }
    }

    fn check_base(&self, b: &[u8]) -> (i32, i32, i32, i32) {
        assert_eq!(u32_at(b, 0), 0, "surface 0");
        assert_eq!(b[20], 0, "clip NONE");
        let r = rect_at(b, 4);
        assert!(r.0 >= 0 && r.1 >= 0 && r.2 > 0 && r.3 > 0, "box {r:?}");
        assert!((r.0 + r.2) as u32 <= self.width && (r.1 + r.3) as u32 <= self.height);
        r
    }

    fn fill(&mut self, b: &[u8]) {
        let (x, y, w, h) = self.check_base(b);
        assert_eq!(b.len(), 41);
        assert_eq!(b[21], 1, "solid brush");
        let color = u32_at(b, 22);
        assert_eq!(&b[26..28], &[8, 0], "OP_PUT");
        for row in y..y + h {
            let start = (row as u32 * self.width) as usize + x as usize;
            self.pixels[start..start + w as usize].fill(color);
        }
    }

    fn copy_bits(&mut self, b: &[u8]) {
        let (x, y, w, h) = self.check_base(b);
        assert_eq!(b.len(), 29);
        let (sx, sy) = (i32_at(b, 21), i32_at(b, 25));
        assert!(sx >= 0 && sy >= 0 && (sx + w) as u32 <= self.width);
        assert!((sy + h) as u32 <= self.height);
        let old = self.pixels.clone();
        for row in 0..h {
            for col in 0..w {
                let from = ((sy + row) as u32 * self.width + (sx + col) as u32) as usize;
                let to = ((y + row) as u32 * self.width + (x + col) as u32) as usize;
                self.pixels[to] = old[from];
            }
        }
    }

    fn draw_copy(&mut self, b: &[u8]) {
        let (x, y, w, h) = self.check_base(b);
        let image = u32_at(b, 21) as usize;
        assert_eq!(image, 57);
        let (ax, ay, aw, ah) = rect_at(b, 25);
        assert_eq!((aw, ah), (w, h), "no scaling");
        assert_eq!(&b[41..43], &[8, 0], "OP_PUT");
        assert_eq!(u32_at(b, 53), 0, "no mask");

        let kind = b[image + 8];
        let (iw, ih) = (
            u32_at(b, image + 10) as usize,
            u32_at(b, image + 14) as usize,
        );
        let data = &b[image + 18..];
        let (rows, stride) = match kind {
            0 => {
                assert_eq!(data[0], 8, "32BIT");
                assert_eq!(data[1], 4, "TOP_DOWN");
                assert_eq!(
                    (u32_at(data, 2) as usize, u32_at(data, 6) as usize),
                    (iw, ih)
                );
                let stride = u32_at(data, 10) as usize;
                assert_eq!(u32_at(data, 14), 0, "no palette");
                assert_eq!(data.len(), 18 + stride * ih);
                (data[18..].to_vec(), stride)
            }
            109 => {
                let size = u32_at(data, 0) as usize;
                assert_eq!(data.len(), 4 + size);
                assert_eq!(&data[4..6], &[1, 8], "top-down 32BIT");
                let mut out = Vec::new();
                let mut pos = 6;
                while pos < data.len() {
                    let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
                    let block = &data[pos + 4..pos + 4 + len];
                    out.extend(lz4_flex::block::decompress(block, iw * ih * 4).unwrap());
                    pos += 4 + len;
                }
                assert_eq!(out.len(), iw * ih * 4);
                (out, iw * 4)
            }
            other => panic!("image type {other}"),
        };
        self.seen.push((304, kind));
        for row in 0..h as usize {
            for col in 0..w as usize {
                let at = (ay as usize + row) * stride + (ax as usize + col) * 4;
                let p = u32::from_le_bytes(rows[at..at + 4].try_into().unwrap()) & 0x00ff_ffff;
                let to = (y as usize + row) * self.width as usize + x as usize + col;
                self.pixels[to] = p;
            }
        }
    }

    /// Reads display messages until the screen is marked and equals `expect`, or fails.
    pub fn sync_to(&mut self, client: &mut Client, expect: &Frame, within: Duration) {
        let deadline = Instant::now() + within;
        client
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        while !(self.marked && self.matches(expect)) {
            assert!(
                Instant::now() < deadline,
                "screen did not converge: {}",
                self.diff(expect)
            );
            match client.recv() {
                Ok((t, b)) => self.apply(t, &b),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("display channel failed: {e}"),
            }
        }
    }

    pub fn matches(&self, f: &Frame) -> bool {
        self.width == f.width && self.height == f.height && self.pixels == f.pixels
    }

    fn diff(&self, f: &Frame) -> String {
        if (self.width, self.height) != (f.width, f.height) {
            return format!(
                "size {}x{} vs {}x{}",
                self.width, self.height, f.width, f.height
            );
        }
        let bad = self.pixels.iter().zip(&f.pixels).position(|(a, b)| a != b);
        format!("marked {}, first differing pixel {bad:?}", self.marked)
    }
}

/// The producer's framebuffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
}

impl Frame {
    fn new(width: u32, height: u32) -> Self {
        let pixels = (0..width * height)
            .map(|i: u32| i.wrapping_mul(2_654_435_761) & 0x00ff_ffff)
            .collect();
        Frame {
            width,
            height,
            pixels,
        }
    }

    fn block(&self, r: Rect) -> Vec<u32> {
        let mut out = Vec::new();
        for y in r.y..r.y + r.h as i32 {
            let start = y as usize * self.width as usize + r.x as usize;
            out.extend_from_slice(&self.pixels[start..start + r.w as usize]);
        }
        out
    }
}

/// The synthetic display source: a framebuffer and the sink, on one producer thread.
pub struct Source {
    pub frame: Frame,
    pub sink: DisplaySink,
    owed: Vec<Rect>,
}

impl Source {
    /// Fills `r` (clipped to the frame) in the frame and through the sink.
    pub fn fill(&mut self, r: Rect, color: u32) {
        let bounds = Rect::new(0, 0, self.frame.width, self.frame.height);
        let clipped = r.intersect(&bounds);
        for y in clipped.y..clipped.y + clipped.h as i32 {
            let start = y as usize * self.frame.width as usize + clipped.x as usize;
            self.frame.pixels[start..start + clipped.w as usize].fill(color);
        }
        self.sink.fill(r, color);
    }

    /// Copies in the frame and through the sink.
    pub fn copy_bits(&mut self, sx: i32, sy: i32, dest: Rect) {
        let src = self.frame.block(Rect::new(sx, sy, dest.w, dest.h));
        self.put(dest, &src);
        self.sink.copy_bits(sx, sy, dest);
    }

    /// Paints `r` in the frame and sends it as an image.
    pub fn image(&mut self, r: Rect, pixels: &[u32]) {
        self.put(r, pixels);
        self.sink.image(r, pixels);
    }

    fn put(&mut self, r: Rect, pixels: &[u32]) {
        for (i, y) in (r.y..r.y + r.h as i32).enumerate() {
            let start = y as usize * self.frame.width as usize + r.x as usize;
            let row = &pixels[i * r.w as usize..(i + 1) * r.w as usize];
            self.frame.pixels[start..start + r.w as usize].copy_from_slice(row);
        }
    }

    /// Answers owed refreshes from the frame.
    pub fn serve_refresh(&mut self) {
        self.sink.take_refresh(&mut self.owed);
        for r in std::mem::take(&mut self.owed) {
            let pixels = self.frame.block(r);
            self.sink.image(r, &pixels);
        }
    }
}

type Job = Box<dyn FnOnce(&mut Source) + Send>;

enum Cmd {
    Wake,
    Run(Job),
}

/// The producer thread running a [`Source`] (it ends with the server).
pub struct Producer {
    tx: Sender<Cmd>,
}

impl Producer {
    /// Runs `job` on the producer thread and returns its result.
    pub fn run<R: Send + 'static>(&self, job: impl FnOnce(&mut Source) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |s| {
            let _ = tx.send(job(s));
        });
        self.tx.send(Cmd::Run(job)).unwrap();
        rx.recv().unwrap()
    }

    /// A copy of the frame.
    pub fn frame(&self) -> Frame {
        self.run(|s| s.frame.clone())
    }
}

/// Records input events as text.
#[derive(Clone, Default)]
pub struct InputLog(pub Arc<Mutex<Vec<String>>>);

impl InputSink for InputLog {
    fn key_down(&mut self, scancode: u32) {
        self.0.lock().unwrap().push(format!("down {scancode:#x}"));
    }
    fn key_up(&mut self, scancode: u32) {
        self.0.lock().unwrap().push(format!("up {scancode:#x}"));
    }
    fn mouse_motion(&mut self, dx: i32, dy: i32, buttons: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("motion {dx} {dy} {buttons}"));
    }
    fn mouse_button(&mut self, button: u32, pressed: bool, buttons: u32) {
        let what = if pressed { "press" } else { "release" };
        self.0
            .lock()
            .unwrap()
            .push(format!("{what} {button} {buttons}"));
    }
    fn modifiers(&mut self, leds: u32) {
        self.0.lock().unwrap().push(format!("leds {leds}"));
    }
}

/// A running server with a `width` x `height` synthetic source.
pub struct Harness {
    pub producer: Producer,
    pub server: SpiceServer,
    pub addr: SocketAddr,
    pub inputs: InputLog,
}

/// Starts a server on 127.0.0.1 (free port) with `password` and a producer thread.
pub fn start(password: Option<&str>, width: u32, height: u32) -> Harness {
    let _ = env_logger::builder().is_test(true).try_init();
    let (tx, rx) = mpsc::channel::<Cmd>();
    let wake = Mutex::new(tx.clone());
    let refresh = Box::new(move || {
        let _ = wake.lock().unwrap().send(Cmd::Wake);
    });
    let inputs = InputLog::default();
    let config = SpiceConfig {
        addr: [127, 0, 0, 1].into(),
        port: 0,
        password: password.map(str::to_owned),
    };
    let (server, sink) = SpiceServer::start(config, Box::new(inputs.clone()), refresh).unwrap();
    let addr = server.local_addr();
    thread::spawn(move || {
        let mut source = Source {
            frame: Frame::new(width, height),
            sink,
            owed: Vec::new(),
        };
        source.sink.primary_created(width, height);
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Wake => source.serve_refresh(),
                Cmd::Run(job) => job(&mut source),
            }
        }
    });
    Harness {
        producer: Producer { tx },
        server,
        addr,
        inputs,
    }
}
