// SPDX-License-Identifier: Apache-2.0
//! A SPICE client for tests, in plain Rust: it links the main channel and then the display,
//! inputs and cursor channels the server lists, rebuilds the primary surface from the display
//! channel so a test can compare it pixel for pixel with a `screendump`, and drives the
//! keyboard and mouse.
//!
//! Each channel after the link has a reader thread that applies server messages to shared
//! state; [`SpiceClient`] reads that state and sends input. Every read is bounded in size,
//! every wait in time: a broken server fails the test with an error, it cannot hang it.
//!
//! Left out on purpose: TLS, SASL, QUIC/LZ/GLZ/JPEG images, video streams, masks, ROPs other
//! than a plain copy, and scaled copies. Each is reported as an error when a server sends it.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use vmm_tests::spice_client::SpiceClient;
//! let addr = "127.0.0.1:5930".parse().unwrap();
//! let client = SpiceClient::connect(addr, None, Duration::from_secs(10)).unwrap();
//! client.wait_quiet(Duration::from_millis(300), Duration::from_secs(10)).unwrap();
//! let screen = client.screen().unwrap();
//! println!("{}x{}", screen.width, screen.height);
//! ```

pub mod canvas;
mod channel;
pub mod cursor;
pub mod display;
pub mod image;
mod link;
pub mod wire;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use channel::{Channel, Writer};
pub use cursor::CursorState;
use display::{Display, DrawLog, DrawRecord};
use wire::{caps, channel as channel_type, common_cap, display_cap, Bytes, LinkRequest};

/// Largest server message accepted (64 MiB: a raw 32-bit 4096x4096 image fits).
pub const MAX_MESSAGE_SIZE: u32 = 64 << 20;

/// Main channel numbers (SPICE_MSG_MAIN_* and SPICE_MSGC_MAIN_*).
mod main_msg {
    /// Server: session id, display count, mouse modes, agent, multimedia time, RAM hint.
    pub const INIT: u16 = 103;
    /// Server: u32 n, then n x {u8 type, u8 id}.
    pub const CHANNELS_LIST: u16 = 104;
    /// Server: u16 supported modes, u16 current mode.
    pub const MOUSE_MODE: u16 = 105;
    /// Client: ask for CHANNELS_LIST.
    pub const ATTACH_CHANNELS: u16 = 104;
}

/// Inputs channel numbers (SPICE_MSG_INPUTS_* and SPICE_MSGC_INPUTS_*).
mod inputs_msg {
    /// Server: u16 keyboard modifiers (lock LEDs).
    pub const INIT: u16 = 101;
    /// Server: u16 keyboard modifiers, when the guest's LEDs change.
    pub const KEY_MODIFIERS: u16 = 102;
    /// Server: one per SPICE_INPUT_MOTION_ACK_BUNCH motion messages.
    pub const MOUSE_MOTION_ACK: u16 = 111;
    /// Client: u32 scancode bytes.
    pub const KEY_DOWN: u16 = 101;
    /// Client: u32 scancode bytes.
    pub const KEY_UP: u16 = 102;
    /// Client: i32 dx, i32 dy, u16 buttons.
    pub const MOUSE_MOTION: u16 = 111;
    /// Client: u32 x, u32 y, u16 buttons, u8 display id.
    pub const MOUSE_POSITION: u16 = 112;
    /// Client: u8 button, u16 buttons.
    pub const MOUSE_PRESS: u16 = 113;
    /// Client: u8 button, u16 buttons.
    pub const MOUSE_RELEASE: u16 = 114;
}

/// SPICE_INPUT_MOTION_ACK_BUNCH: the server acks every this many motion messages.
pub const MOTION_ACK_BUNCH: u64 = 4;
/// DISPLAY_INIT's GLZ window, in pixels (spice-gtk's value for a 64 MiB RAM hint). GLZ images
/// are not decoded, but spice-server sizes a dictionary from it.
const GLZ_WINDOW_PIXELS: i32 = 8 << 20;

/// What went wrong, at which step.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket operation failed.
    #[error("I/O error: cannot {step}")]
    Io {
        /// What the client was doing.
        step: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A read, write or wait ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The server closed a channel between two messages.
    #[error("the server closed the connection")]
    Closed,
    /// The server sent something malformed or out of bounds.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The server used a feature this client does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The server refused the password (SPICE_LINK_ERR_PERMISSION_DENIED).
    #[error("permission denied: the server refused the password")]
    PermissionDenied,
    /// The server refused a link with another error code.
    #[error("the server refused to link a channel of type {channel_type}: link error {code}")]
    LinkRefused {
        /// SPICE_CHANNEL_* of the refused channel.
        channel_type: u8,
        /// SPICE_LINK_ERR_*.
        code: u32,
    },
    /// SPICE passwords are at most 60 bytes.
    #[error("the password is longer than 60 bytes")]
    PasswordTooLong,
    /// A channel's reader thread stopped on an error.
    #[error("the {channel} channel failed")]
    ChannelFailed {
        /// Which channel.
        channel: &'static str,
        /// Why.
        #[source]
        source: Arc<ClientError>,
    },
    /// The server did not list a channel the call needs.
    #[error("the server offers no {0} channel")]
    NoChannel(&'static str),
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// The SPICE password; None for a server without one.
    pub password: Option<String>,
    /// Bounds linking all channels, and then each input call that waits for the server.
    pub timeout: Duration,
    /// The image compression to ask the display channel for (the server's choice if None).
    pub compression: Option<ImageCompression>,
}

/// Image compressions the client can ask for: those whose images it decodes
/// (SPICE_IMAGE_COMPRESSION_* numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageCompression {
    /// Raw bitmaps.
    Off = 1,
    /// LZ4 for RGB images (spice-server falls back to raw bitmaps for the rest).
    Lz4 = 7,
}

/// What `link_other` needs besides the client.
struct OtherLink<'a> {
    addr: SocketAddr,
    kind: u8,
    password: &'a str,
    compression: Option<ImageCompression>,
}

/// A copy of the primary surface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// 0x00RRGGBB pixels, row after row, top row first.
    pub pixels: Vec<u32>,
}

impl Screen {
    /// Writes the screen as an 8-bit RGB PNG.
    pub fn write_png(&self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let rgb: Vec<u8> = self
            .pixels
            .iter()
            .flat_map(|p| {
                let [b, g, r, _] = p.to_le_bytes();
                [r, g, b]
            })
            .collect();
        encoder
            .write_header()
            .and_then(|mut writer| writer.write_image_data(&rgb))
            .map_err(std::io::Error::other)
    }
}

/// Counters of what the client received and sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Main channel messages handled after the link (SET_ACK and PING not counted).
    pub main_messages: u64,
    /// Display channel messages and their body bytes.
    pub display_messages: u64,
    /// See `display_messages`.
    pub display_bytes: u64,
    /// When the last display message arrived.
    pub last_display_message: Option<Instant>,
    /// Cursor channel messages.
    pub cursor_messages: u64,
    /// Inputs channel messages from the server.
    pub inputs_messages: u64,
    /// MOUSE_MOTION and MOUSE_POSITION messages sent.
    pub motions_sent: u64,
    /// MOUSE_MOTION_ACK messages received.
    pub motion_acks: u64,
    /// Lock-key LEDs from the inputs channel (1 scroll, 2 num, 4 caps).
    pub keyboard_modifiers: u16,
    /// Mouse modes the server supports (1 server, 2 client) and the current one.
    pub mouse_modes: (u16, u16),
    /// Images drawn, by SPICE_IMAGE_TYPE_* (0 bitmap, 109 LZ4, 103 from cache, ...).
    pub image_kinds: std::collections::BTreeMap<u8, u64>,
}

/// State the reader threads update.
#[derive(Default)]
struct State {
    display: Display,
    cursor: CursorState,
    stats: Stats,
    failure: Option<(&'static str, Arc<ClientError>)>,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// While set, the channels read nothing: a client that stopped reading.
    stalled: std::sync::atomic::AtomicBool,
}

impl State {
    fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.image_kinds = self.display.image_kinds.clone();
        stats
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("client state lock")
    }
}

/// A connected SPICE session. Dropping it closes every channel and joins its threads.
pub struct SpiceClient {
    shared: Arc<Shared>,
    session_id: u32,
    channels: Vec<(u8, u8)>,
    inputs: Option<Arc<Writer>>,
    sockets: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
    buttons: u16,
    timeout: Duration,
}

impl SpiceClient {
    /// Links the main channel at `addr`, then display 0, inputs 0 and cursor 0 if the server
    /// lists them, all within `timeout` (which also bounds later input calls). A wrong password
    /// gives `ClientError::PermissionDenied`.
    pub fn connect(
        addr: SocketAddr,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<SpiceClient, ClientError> {
        let options = Options {
            password: password.map(String::from),
            timeout,
            compression: None,
        };
        SpiceClient::connect_with(addr, &options)
    }

    /// Like [`SpiceClient::connect`], with every option.
    pub fn connect_with(addr: SocketAddr, options: &Options) -> Result<SpiceClient, ClientError> {
        let timeout = options.timeout;
        let deadline = Instant::now() + timeout;
        let password = options.password.as_deref().unwrap_or("");
        let mut client = SpiceClient {
            shared: Arc::default(),
            session_id: 0,
            channels: Vec::new(),
            inputs: None,
            sockets: Vec::new(),
            threads: Vec::new(),
            buttons: 0,
            timeout,
        };

        let main = client.link_main(addr, password, deadline)?;
        client.start("main", main, handle_main)?;
        for &(kind, id) in &client.channels.clone() {
            if id == 0 {
                let link = OtherLink {
                    addr,
                    kind,
                    password,
                    compression: options.compression,
                };
                client.link_other(&link, deadline)?;
            }
        }
        Ok(client)
    }

    /// Links the main channel and reads MAIN_INIT and CHANNELS_LIST.
    fn link_main(
        &mut self,
        addr: SocketAddr,
        password: &str,
        deadline: Instant,
    ) -> Result<Channel, ClientError> {
        let request = link_request(0, channel_type::MAIN, Vec::new());
        let linked = link::link(addr, &request, password, deadline)?;
        let mut main = Channel::new("main", linked, MAX_MESSAGE_SIZE)?;

        main.set_deadline(Some(deadline), "wait for MAIN_INIT")?;
        let init = next_of_kind(&mut main, main_msg::INIT, &self.shared)?;
        let mut bytes = Bytes::new(&init, "MAIN_INIT");
        self.session_id = bytes.u32()?;
        let _displays = bytes.u32()?;
        let modes = (bytes.u32()?, bytes.u32()?);
        self.shared.lock().stats.mouse_modes = (low16(modes.0), low16(modes.1));

        main.writer.send(main_msg::ATTACH_CHANNELS, &[])?;
        main.set_deadline(Some(deadline), "wait for CHANNELS_LIST")?;
        let list = next_of_kind(&mut main, main_msg::CHANNELS_LIST, &self.shared)?;
        self.channels = parse_channels_list(&list)?;
        Ok(main)
    }

    /// Links one display, inputs or cursor channel and starts its reader thread; other
    /// channel types are not opened.
    fn link_other(&mut self, link: &OtherLink, deadline: Instant) -> Result<(), ClientError> {
        let (name, channel_caps, handler): (_, _, Handler) = match link.kind {
            channel_type::DISPLAY => {
                let caps = caps(&[display_cap::LZ4_COMPRESSION, display_cap::PREF_COMPRESSION]);
                ("display", caps, handle_display)
            }
            channel_type::INPUTS => ("inputs", Vec::new(), handle_inputs),
            channel_type::CURSOR => ("cursor", Vec::new(), handle_cursor),
            _ => return Ok(()),
        };
        let request = link_request(self.session_id, link.kind, channel_caps);
        let linked = link::link(link.addr, &request, link.password, deadline)?;
        let channel = Channel::new(name, linked, MAX_MESSAGE_SIZE)?;

        match link.kind {
            channel_type::DISPLAY => send_display_init(&channel.writer, link.compression)?,
            channel_type::INPUTS => self.inputs = Some(channel.writer.clone()),
            _ => {}
        }
        self.start(name, channel, handler)
    }

    /// Starts the reader thread of `channel`.
    fn start(&mut self, name: &str, channel: Channel, handler: Handler) -> Result<(), ClientError> {
        channel.set_deadline(None, "start the reader")?;
        self.sockets.push(channel.socket()?);
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("spice-{name}"))
            .spawn(move || read_loop(channel, &shared, handler))
            .map_err(|e| wire::io_error("start a channel thread", e))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Stops reading from every channel (`true`), as a client that hangs would, or reads
    /// again (`false`). Messages already read are still applied.
    pub fn stall(&self, stalled: bool) {
        self.shared
            .stalled
            .store(stalled, std::sync::atomic::Ordering::SeqCst);
    }

    /// The session id from MAIN_INIT.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// The (type, id) pairs of the server's CHANNELS_LIST.
    pub fn channels(&self) -> &[(u8, u8)] {
        &self.channels
    }

    /// The primary surface as it stands, if the server created one.
    pub fn screen(&self) -> Option<Screen> {
        let state = self.shared.lock();
        let primary = state.display.primary()?;
        let pixels = primary
            .pixmap
            .pixels
            .iter()
            .map(|p| p & 0x00ff_ffff)
            .collect();
        Some(Screen {
            width: primary.pixmap.width,
            height: primary.pixmap.height,
            pixels,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// Starts a log of the DRAW_COPY images received from now on, for benchmarks whose guest
    /// stamps its TSC into the pixels it draws: for each image, the host's TSC when its
    /// message began to be applied (after it was read whole, under the client's state lock),
    /// where it landed and its first four decoded pixels. At most `capacity` records are kept
    /// (never more than [`display::MAX_DRAW_LOG`]); later ones are only counted. Replaces an
    /// earlier log. Without this call nothing is logged.
    pub fn log_draws(&self, capacity: usize) {
        self.shared.lock().display.draw_log = Some(DrawLog::new(capacity));
    }

    /// Takes the records logged so far and how many did not fit, leaving the log running and
    /// empty; nothing if no log was started.
    pub fn take_draw_log(&self) -> (Vec<DrawRecord>, u64) {
        let mut state = self.shared.lock();
        state
            .display
            .draw_log
            .as_mut()
            .map_or((Vec::new(), 0), DrawLog::take)
    }

    /// The cursor channel's state.
    pub fn cursor(&self) -> CursorState {
        self.shared.lock().cursor.clone()
    }

    /// The first channel failure, if any.
    pub fn failure(&self) -> Option<ClientError> {
        let state = self.shared.lock();
        state.failure.as_ref().map(failure_error)
    }

    /// Waits until a primary surface exists, MARK has arrived and no display message came for
    /// `quiet`; fails after `max`, or at once when a channel fails.
    pub fn wait_quiet(&self, quiet: Duration, max: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + max;
        let mut state = self.shared.lock();
        loop {
            if let Some(failure) = &state.failure {
                return Err(failure_error(failure));
            }
            let now = Instant::now();
            let ready = state.display.primary().is_some() && state.display.mark;
            let last = state.stats.last_display_message.unwrap_or(now);
            let still = now.saturating_duration_since(last);
            if ready && still >= quiet {
                return Ok(());
            }
            if now >= deadline {
                return Err(ClientError::Timeout(format!(
                    "the display was not quiet for {quiet:?} within {max:?} ({} messages, \
                     primary surface {}, mark {})",
                    state.stats.display_messages,
                    state.display.primary().is_some(),
                    state.display.mark
                )));
            }
            let nap = if ready { quiet - still } else { quiet };
            let nap = nap.min(deadline - now).max(Duration::from_millis(1));
            state = self
                .shared
                .changed
                .wait_timeout(state, nap)
                .expect("lock")
                .0;
        }
    }

    /// Waits until `done(stats)` holds, for at most `max`; `what` names the wait in errors.
    pub fn wait_until(
        &self,
        what: &str,
        max: Duration,
        done: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, ClientError> {
        let deadline = Instant::now() + max;
        let mut state = self.shared.lock();
        loop {
            if done(&state.stats) {
                return Ok(state.stats());
            }
            if let Some(failure) = &state.failure {
                return Err(failure_error(failure));
            }
            let left = link::remaining(deadline, what)?;
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .expect("lock")
                .0;
        }
    }

    fn inputs(&self) -> Result<&Writer, ClientError> {
        self.inputs
            .as_deref()
            .ok_or(ClientError::NoChannel("inputs"))
    }

    /// Presses (`down`) or releases a key. `scancode` is the PC XT (set 1) make code as SPICE
    /// carries it: bytes least significant first, e.g. 0x1e for A, 0x4de0 for Right (E0 4D).
    /// The release sends the break code: bit 7 set on the last byte (0x9e, 0xcde0).
    pub fn key(&self, scancode: u32, down: bool) -> Result<(), ClientError> {
        let (kind, code) = if down {
            (inputs_msg::KEY_DOWN, scancode)
        } else {
            (inputs_msg::KEY_UP, break_code(scancode))
        };
        self.inputs()?.send(kind, &code.to_le_bytes())
    }

    /// Sends a relative motion with `buttons` held (mask: 1 left, 2 middle, 4 right). Waits,
    /// within the connect timeout, while 8 motions are unacknowledged, as spice-gtk does.
    pub fn mouse_motion(&self, dx: i32, dy: i32, buttons: u16) -> Result<(), ClientError> {
        let mut body = dx.to_le_bytes().to_vec();
        body.extend(dy.to_le_bytes());
        body.extend(buttons.to_le_bytes());
        self.send_motion(inputs_msg::MOUSE_MOTION, &body)
    }

    /// Sends an absolute position (client mouse mode) on display `display_id`.
    pub fn mouse_position(&self, x: u32, y: u32, display_id: u8) -> Result<(), ClientError> {
        let mut body = x.to_le_bytes().to_vec();
        body.extend(y.to_le_bytes());
        body.extend(self.buttons.to_le_bytes());
        body.push(display_id);
        self.send_motion(inputs_msg::MOUSE_POSITION, &body)
    }

    fn send_motion(&self, kind: u16, body: &[u8]) -> Result<(), ClientError> {
        let window = 2 * MOTION_ACK_BUNCH;
        self.wait_until("a mouse motion ack", self.timeout, |s| {
            s.motions_sent < s.motion_acks * MOTION_ACK_BUNCH + window
        })?;
        self.inputs()?.send(kind, body)?;
        self.shared.lock().stats.motions_sent += 1;
        Ok(())
    }

    /// Presses or releases `button` (1 left, 2 middle, 3 right, 4 wheel up, 5 wheel down).
    pub fn mouse_button(&mut self, button: u8, down: bool) -> Result<(), ClientError> {
        let bit = match button {
            1..=7 => 1u16 << (button - 1),
            _ => return Err(ClientError::Unsupported(format!("mouse button {button}"))),
        };
        let kind = if down {
            self.buttons |= bit;
            inputs_msg::MOUSE_PRESS
        } else {
            self.buttons &= !bit;
            inputs_msg::MOUSE_RELEASE
        };
        let mut body = vec![button];
        body.extend(self.buttons.to_le_bytes());
        self.inputs()?.send(kind, &body)
    }
}

impl Drop for SpiceClient {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        for socket in &self.sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn failure_error((channel, source): &(&'static str, Arc<ClientError>)) -> ClientError {
    ClientError::ChannelFailed {
        channel,
        source: source.clone(),
    }
}

fn low16(value: u32) -> u16 {
    u16::try_from(value & 0xffff).expect("masked to 16 bits")
}

/// The break code of a make code: bit 7 set on its last (most significant non-zero) byte.
fn break_code(make: u32) -> u32 {
    let top = (0..4)
        .rev()
        .find(|i| make >> (8 * i) & 0xff != 0)
        .unwrap_or(0);
    make | 0x80 << (8 * top)
}

/// A link request offering AUTH_SELECTION, AUTH_SPICE and the mini header.
fn link_request(connection_id: u32, kind: u8, channel_caps: Vec<u32>) -> LinkRequest {
    LinkRequest {
        connection_id,
        channel_type: kind,
        channel_id: 0,
        common_caps: caps(&[
            common_cap::PROTOCOL_AUTH_SELECTION,
            common_cap::AUTH_SPICE,
            common_cap::MINI_HEADER,
        ]),
        channel_caps,
    }
}

/// Sends DISPLAY_INIT and, if asked for, PREFERRED_COMPRESSION (u8) in one write, so that
/// spice-server reads the preference before it compresses the first image.
fn send_display_init(
    writer: &Writer,
    compression: Option<ImageCompression>,
) -> Result<(), ClientError> {
    let init = display_init();
    let preference = compression.map(|c| [c as u8]);
    let mut messages = vec![(display::DISPLAY_INIT, &init[..])];
    if let Some(preference) = &preference {
        messages.push((display::PREFERRED_COMPRESSION, &preference[..]));
    }
    writer.send_all(&messages)
}

/// DISPLAY_INIT: u8 pixmap cache id, i64 cache size (pixels), u8 GLZ dictionary id, i32 GLZ
/// window (pixels).
fn display_init() -> Vec<u8> {
    let cache = i64::try_from(display::PIXMAP_CACHE_PIXELS).expect("small");
    let mut body = vec![1];
    body.extend(cache.to_le_bytes());
    body.push(1);
    body.extend(GLZ_WINDOW_PIXELS.to_le_bytes());
    body
}

/// Reads main channel messages until one of `kind`, counting the others.
fn next_of_kind(main: &mut Channel, kind: u16, shared: &Shared) -> Result<Vec<u8>, ClientError> {
    loop {
        let message = main.next()?;
        shared.lock().stats.main_messages += 1;
        if message.kind == kind {
            return Ok(message.body);
        }
    }
}

/// CHANNELS_LIST: u32 n, then n x {u8 type, u8 id}.
fn parse_channels_list(body: &[u8]) -> Result<Vec<(u8, u8)>, ClientError> {
    let mut bytes = Bytes::new(body, "CHANNELS_LIST");
    let count = usize::try_from(bytes.u32()?).unwrap_or(usize::MAX);
    if count > bytes.remaining() / 2 {
        return Err(ClientError::Protocol(format!(
            "CHANNELS_LIST of {count} channels in {} bytes",
            bytes.remaining()
        )));
    }
    (0..count).map(|_| Ok((bytes.u8()?, bytes.u8()?))).collect()
}

/// Applies one message of a channel to the shared state.
type Handler = fn(&mut State, u16, &[u8]) -> Result<(), ClientError>;

/// Runs a channel until it fails or the client closes it.
fn read_loop(mut channel: Channel, shared: &Shared, handler: Handler) {
    let error = loop {
        while shared.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let message = match channel.next() {
            Ok(message) => message,
            Err(e) => break e,
        };
        let mut state = shared.lock();
        if let Err(e) = handler(&mut state, message.kind, &message.body) {
            break e;
        }
        drop(state);
        shared.changed.notify_all();
    };

    let mut state = shared.lock();
    if !state.closing && state.failure.is_none() {
        state.failure = Some((channel.name, Arc::new(error)));
    }
    drop(state);
    shared.changed.notify_all();
}

fn handle_main(state: &mut State, kind: u16, body: &[u8]) -> Result<(), ClientError> {
    state.stats.main_messages += 1;
    if kind == main_msg::MOUSE_MODE {
        let mut bytes = Bytes::new(body, "MOUSE_MODE");
        state.stats.mouse_modes = (bytes.u16()?, bytes.u16()?);
    }
    Ok(())
}

fn handle_display(state: &mut State, kind: u16, body: &[u8]) -> Result<(), ClientError> {
    if let Some(log) = &mut state.display.draw_log {
        log.set_arrival(crate::tsc::now());
    }
    let stats = &mut state.stats;
    stats.display_messages += 1;
    stats.display_bytes += body.len() as u64;
    stats.last_display_message = Some(Instant::now());
    state.display.handle(kind, body)
}

fn handle_inputs(state: &mut State, kind: u16, body: &[u8]) -> Result<(), ClientError> {
    state.stats.inputs_messages += 1;
    match kind {
        inputs_msg::INIT | inputs_msg::KEY_MODIFIERS => {
            state.stats.keyboard_modifiers = Bytes::new(body, "KEY_MODIFIERS").u16()?;
        }
        inputs_msg::MOUSE_MOTION_ACK => state.stats.motion_acks += 1,
        _ => {}
    }
    Ok(())
}

fn handle_cursor(state: &mut State, kind: u16, body: &[u8]) -> Result<(), ClientError> {
    state.stats.cursor_messages += 1;
    state.cursor.handle(kind, body)
}

#[cfg(test)]
mod tests;
