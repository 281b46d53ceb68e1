// SPDX-License-Identifier: Apache-2.0
//! The listener, the client session and one reader plus one writer thread per channel.
//!
//! One client session at a time, as spice-server does: a new main channel replaces the old
//! session (all its sockets are shut down), and other channels must name the current session
//! id. Closing the main channel ends the session.

use std::collections::BTreeMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::channel::{self, ChannelWriter, Outbox, Queue, SmallQueue};
use crate::cursor::{self, CursorQueue};
use crate::display_msg::ImageCodec;
use crate::display_queue::DisplayQueue;
use crate::inputs::{self, InputSink, InputsChannel};
use crate::link::{self, has_cap, KeyPool, LinkError, LinkMess, Linked};
use crate::log_limit::LogLimiter;
use crate::main_channel::{self, MainAction};
use crate::proto::*;
use crate::sink::{DisplaySink, Hub};
use crate::{SpiceConfig, SpiceError};

/// Time a connection has to finish the link stage.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections allowed in the link stage at once; beyond that, the oldest is closed to make
/// room, so that a flood of idle handshakes cannot lock a real client out.
const MAX_LINKING: usize = 64;
/// How often the listener looks at the stop flag.
const ACCEPT_POLL_MS: i32 = 200;

/// The producer's refresh callback.
type Refresh = Arc<dyn Fn() + Send + Sync>;

/// A linked channel connection, as the session sees it.
struct Registered {
    channel_type: u8,
    stream: Option<TcpStream>,
    close: Box<dyn Fn() + Send + Sync>,
}

impl Registered {
    fn shut(&self) {
        (self.close)();
        if let Some(stream) = &self.stream {
            // The peer may already be gone.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The connected client.
struct Session {
    id: u32,
    channels: Vec<Arc<Registered>>,
}

/// Everything the server threads share.
struct Shared {
    password: Option<String>,
    hub: Arc<Hub>,
    keys: KeyPool,
    input: Mutex<Box<dyn InputSink>>,
    refresh: Refresh,
    session: Mutex<Option<Session>>,
    /// Connections in the link stage, oldest (lowest id) first.
    linking: Mutex<BTreeMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    stop: AtomicBool,
    log: Mutex<LogLimiter>,
    start: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The SPICE server: owns the listener and the client threads; dropping it stops them.
pub struct SpiceServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SpiceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiceServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl SpiceServer {
    /// Listens on `config.addr:config.port` (port 0 picks a free port) and returns the server
    /// and the producer's sink. `input` receives keyboard and mouse events; `refresh` is
    /// called from a server thread (so it must be cheap) whenever
    /// [`DisplaySink::take_refresh`] has rectangles for the producer.
    pub fn start(
        config: SpiceConfig,
        input: Box<dyn InputSink>,
        refresh: Box<dyn Fn() + Send + Sync>,
    ) -> Result<(SpiceServer, DisplaySink), SpiceError> {
        if config
            .password
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PASSWORD_LENGTH)
        {
            return Err(SpiceError::PasswordTooLong(MAX_PASSWORD_LENGTH));
        }
        let addr = SocketAddr::new(config.addr, config.port);
        let listener = TcpListener::bind(addr).map_err(|e| SpiceError::Bind(addr, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| SpiceError::Bind(addr, e))?;

        let hub = Arc::new(Hub::default());
        let shared = Arc::new(Shared {
            password: config.password,
            hub: hub.clone(),
            keys: KeyPool::start().map_err(SpiceError::Thread)?,
            input: Mutex::new(input),
            refresh: Arc::from(refresh),
            session: Mutex::new(None),
            linking: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            log: Mutex::new(LogLimiter::default()),
            start: Instant::now(),
        });

        let accept_shared = shared.clone();
        let handle = thread::Builder::new()
            .name("spice-listen".into())
            .spawn(move || accept_loop(&accept_shared, &listener))
            .map_err(SpiceError::Thread)?;
        log::info!("spice: listening on {local_addr}");

        let server = SpiceServer {
            shared,
            local_addr,
            listener: Some(handle),
        };
        Ok((server, DisplaySink::new(hub)))
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for SpiceServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.listener.take() {
            // A panicked listener has nothing left to stop.
            let _ = handle.join();
        }
        for stream in lock(&self.shared.linking).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        end_session(&self.shared, None);
    }
}

/// Waits up to [`ACCEPT_POLL_MS`] for the listener to become readable.
fn wait_readable(listener: &TcpListener) -> bool {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd for the duration of the call and nfds is 1.
    let n = unsafe { libc::poll(&mut pfd, 1, ACCEPT_POLL_MS) };
    n > 0
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        if !wait_readable(listener) {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => admit_connection(shared, stream, peer),
            Err(e) => lock(&shared.log).warn(format_args!("accept failed: {e}")),
        }
    }
}

/// Starts a connection's thread; with too many connections still linking, the oldest of them
/// is closed first (its thread then ends on the closed socket).
fn admit_connection(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    {
        let mut linking = lock(&shared.linking);
        if linking.len() >= MAX_LINKING {
            if let Some((_, oldest)) = linking.pop_first() {
                let _ = oldest.shutdown(Shutdown::Both);
            }
            lock(&shared.log).warn(format_args!(
                "too many connections linking: closed the oldest to admit {peer}"
            ));
        }
        match stream.try_clone() {
            Ok(clone) => linking.insert(id, clone),
            Err(e) => {
                drop(linking);
                lock(&shared.log).warn(format_args!("{peer}: {e}"));
                return;
            }
        };
    }
    let conn_shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("spice-conn".into())
        .spawn(move || run_connection(&conn_shared, stream, peer, id));
    if let Err(e) = spawned {
        lock(&shared.linking).remove(&id);
        lock(&shared.log).warn(format_args!("{peer}: no thread for the connection: {e}"));
    }
}

fn run_connection(shared: &Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, id: u64) {
    let password = shared.password.as_deref();
    let linked = link::handshake(&mut stream, &shared.keys, password, LINK_TIMEOUT, |mess| {
        admit_channel(shared, mess)
    });
    lock(&shared.linking).remove(&id);
    let linked = match linked {
        Ok(linked) => linked,
        Err(e) => {
            let cause = match &e {
                LinkError::Refused(r) => r.to_string(),
                LinkError::Io(io) => io.to_string(),
            };
            lock(&shared.log).warn(format_args!("{peer}: {e}: {cause}"));
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    let kind = linked.mess.channel_type;
    log::info!("spice: {peer}: channel {kind} linked");
    let result = match kind {
        CHANNEL_MAIN => run_main(shared, stream, &linked),
        CHANNEL_DISPLAY => run_display(shared, stream, &linked),
        CHANNEL_INPUTS => run_inputs(shared, stream, &linked),
        _ => run_cursor(shared, stream, &linked),
    };
    match result {
        Ok(()) => log::info!("spice: {peer}: channel {kind} closed"),
        Err(reason) => lock(&shared.log).warn(format_args!("{peer}: channel {kind}: {reason}")),
    }
}

/// Checks a link message against the offered channels and the session.
fn admit_channel(shared: &Shared, mess: &LinkMess) -> Result<(), u32> {
    let known = matches!(
        mess.channel_type,
        CHANNEL_MAIN | CHANNEL_DISPLAY | CHANNEL_INPUTS | CHANNEL_CURSOR
    );
    if !known || mess.channel_id != 0 {
        return Err(LINK_ERR_CHANNEL_NOT_AVAILABLE);
    }
    if mess.channel_type == CHANNEL_MAIN {
        return Ok(());
    }
    match &*lock(&shared.session) {
        Some(session) if session.id == mess.connection_id => Ok(()),
        _ => Err(LINK_ERR_BAD_CONNECTION_ID),
    }
}

/// Adds a channel to session `id`, replacing (and shutting) an older one of its type.
/// Fails when the session is gone.
fn register(shared: &Shared, id: u32, reg: &Arc<Registered>) -> Result<(), String> {
    let mut guard = lock(&shared.session);
    let Some(session) = guard.as_mut().filter(|s| s.id == id) else {
        return Err("session ended during the link".into());
    };
    let (old, keep) = session
        .channels
        .drain(..)
        .partition(|c| c.channel_type == reg.channel_type);
    session.channels = keep;
    session.channels.push(reg.clone());
    drop(guard);
    old.iter().for_each(|c: &Arc<Registered>| c.shut());
    Ok(())
}

fn unregister(shared: &Shared, reg: &Arc<Registered>) {
    if let Some(session) = lock(&shared.session).as_mut() {
        session.channels.retain(|c| !Arc::ptr_eq(c, reg));
    }
}

/// Ends the session (only if it is still `id`, when given), shutting all its channels.
fn end_session(shared: &Shared, id: Option<u32>) {
    let mut guard = lock(&shared.session);
    if id.is_some() && guard.as_ref().map(|s| s.id) != id {
        return;
    }
    let old = guard.take();
    drop(guard);
    if let Some(old) = old {
        old.channels.iter().for_each(|c| c.shut());
    }
}

/// Registration record for a channel whose outbox is `outbox`.
fn registered<Q: Queue>(kind: u8, stream: &TcpStream, outbox: &Arc<Outbox<Q>>) -> Arc<Registered> {
    let outbox = outbox.clone();
    Arc::new(Registered {
        channel_type: kind,
        // A failed clone only loses the shutdown; closing the outbox still stops the writer,
        // which shuts the socket itself.
        stream: stream.try_clone().ok(),
        close: Box::new(move || outbox.close()),
    })
}

/// Runs a channel's writer on its own thread.
fn spawn_writer<Q: Queue>(
    stream: &TcpStream,
    linked: &Linked,
    outbox: &Arc<Outbox<Q>>,
    acks: bool,
    signal: Option<Refresh>,
) -> Result<JoinHandle<()>, String> {
    let clone = stream.try_clone().map_err(|e| e.to_string())?;
    let writer = ChannelWriter::new(clone, linked.header).map_err(|e| e.to_string())?;
    let outbox = outbox.clone();
    let name = channel_name(linked.mess.channel_type);
    thread::Builder::new()
        .name(format!("spice-{name}-tx"))
        .spawn(move || {
            let noop = || {};
            let signal: &dyn Fn() = match &signal {
                Some(f) => f.as_ref(),
                None => &noop,
            };
            writer.run(&outbox, acks, signal, name);
        })
        .map_err(|e| e.to_string())
}

fn channel_name(kind: u8) -> &'static str {
    match kind {
        CHANNEL_MAIN => "main",
        CHANNEL_DISPLAY => "display",
        CHANNEL_INPUTS => "inputs",
        _ => "cursor",
    }
}

/// Reads the channel until it ends, then closes it and waits for its writer.
fn finish<Q: Queue>(
    stream: &mut TcpStream,
    linked: &Linked,
    outbox: &Outbox<Q>,
    writer: JoinHandle<()>,
    handle: impl FnMut(u16, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let result = channel::read_loop(stream, linked.header, outbox, handle);
    outbox.close();
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer.join();
    result
}

fn run_main(shared: &Arc<Shared>, mut stream: TcpStream, linked: &Linked) -> Result<(), String> {
    let id = loop {
        let id = rand::random::<u32>();
        if id != 0 && lock(&shared.session).as_ref().is_none_or(|s| s.id != id) {
            break id;
        }
    };
    let outbox = Outbox::new(SmallQueue::default());
    let mm_time = main_channel::mm_time(shared.start);
    outbox.with(|q| q.push(main_channel::init(id, mm_time)))?;

    let reg = registered(CHANNEL_MAIN, &stream, &outbox);
    end_session(shared, None);
    *lock(&shared.session) = Some(Session {
        id,
        channels: vec![reg.clone()],
    });
    log::info!("spice: new session {id:#x}");

    let writer = spawn_writer(&stream, linked, &outbox, false, None)?;
    let result = finish(
        &mut stream,
        linked,
        &outbox,
        writer,
        |t, body| match main_channel::handle(t, body)? {
            MainAction::Reply(msg) => outbox.with(|q| q.push(msg)),
            MainAction::Ignore => Ok(()),
        },
    );
    end_session(shared, Some(id));
    result
}

fn run_display(shared: &Arc<Shared>, mut stream: TcpStream, linked: &Linked) -> Result<(), String> {
    let codec = match has_cap(&linked.mess.channel_caps, DISPLAY_CAP_LZ4) {
        true => ImageCodec::Lz4,
        false => ImageCodec::Bitmap,
    };
    let outbox = Outbox::new(DisplayQueue::new(codec));
    let reg = registered(CHANNEL_DISPLAY, &stream, &outbox);
    register(shared, linked.mess.connection_id, &reg)?;
    shared.hub.lock().display = Some(outbox.clone());

    let writer = spawn_writer(&stream, linked, &outbox, true, Some(shared.refresh.clone()));
    let result = writer.and_then(|writer| {
        finish(&mut stream, linked, &outbox, writer, |t, _| match t {
            MSGC_DISPLAY_INIT => {
                let hub = shared.hub.lock();
                outbox.with(|q| q.init(hub.primary));
                Ok(())
            }
            // Stream reports, compression and codec preferences: nothing to adapt.
            t if (MSGC_DISPLAY_INIT..=MSGC_DISPLAY_LAST).contains(&t) => Ok(()),
            _ => Err(format!("unknown display channel message type {t}")),
        })
    });

    let mut hub = shared.hub.lock();
    if hub
        .display
        .as_ref()
        .is_some_and(|d| Arc::ptr_eq(d, &outbox))
    {
        hub.display = None;
    }
    drop(hub);
    unregister(shared, &reg);
    result
}

fn run_cursor(shared: &Arc<Shared>, mut stream: TcpStream, linked: &Linked) -> Result<(), String> {
    let outbox = Outbox::new(CursorQueue::default());
    let reg = registered(CHANNEL_CURSOR, &stream, &outbox);
    register(shared, linked.mess.connection_id, &reg)?;
    {
        let mut hub = shared.hub.lock();
        let init = cursor::init(&hub.cursor);
        outbox.with(|q| q.push(init, &hub.cursor));
        hub.cursor_out = Some(outbox.clone());
    }

    let writer = spawn_writer(&stream, linked, &outbox, true, None);
    let result = writer.and_then(|writer| {
        finish(&mut stream, linked, &outbox, writer, |t, _| {
            Err(format!("unknown cursor channel message type {t}"))
        })
    });

    let mut hub = shared.hub.lock();
    if hub
        .cursor_out
        .as_ref()
        .is_some_and(|d| Arc::ptr_eq(d, &outbox))
    {
        hub.cursor_out = None;
    }
    drop(hub);
    unregister(shared, &reg);
    result
}

fn run_inputs(shared: &Arc<Shared>, mut stream: TcpStream, linked: &Linked) -> Result<(), String> {
    let outbox = Outbox::new(SmallQueue::default());
    // TODO: the guest's lock-key LEDs are not tracked yet; the client is told all are off.
    outbox.with(|q| q.push(inputs::init(0)))?;
    let reg = registered(CHANNEL_INPUTS, &stream, &outbox);
    register(shared, linked.mess.connection_id, &reg)?;

    let mut channel = InputsChannel::default();
    let writer = spawn_writer(&stream, linked, &outbox, false, None);
    let result = writer.and_then(|writer| {
        finish(&mut stream, linked, &outbox, writer, |t, body| {
            let reply = channel.handle(&mut **lock(&shared.input), t, body)?;
            match reply {
                Some(msg) => outbox.with(|q| q.push(msg)),
                None => Ok(()),
            }
        })
    });
    unregister(shared, &reg);
    result
}
