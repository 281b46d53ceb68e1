// SPDX-License-Identifier: Apache-2.0
//! The control socket: a Unix socket speaking the shape of QEMU's QMP.
//!
//! One JSON object per line, `{"execute": NAME, "arguments": {...}}`, answered with
//! `{"return": ...}` or `{"error": {"class": ..., "desc": ...}}`. On connect the server greets
//! with `{"QMP": {...}}`; `qmp_capabilities` is accepted but not required. Commands:
//! `query-status`, `query-qxl`, `screendump` (`filename`: the primary surface as PNG),
//! `input-send-event` (keys and mouse, see [`crate::qmp_input`]), `quit`.
//!
//! Clients are served on the event loop thread, none of them waits on a vCPU. A screendump
//! waits (at most [`SCREENDUMP_TIMEOUT`]) for the display thread on a thread of its own, so
//! other clients are answered meanwhile.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::legacy::InputHandle;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use serde_json::{json, Value};

use crate::exit::{VmExit, VmStop};
use crate::qmp_input;

/// Longest request line accepted; a longer one closes the connection.
const MAX_LINE: usize = 64 * 1024;
/// How long a screendump waits for the display thread.
pub const SCREENDUMP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most clients served at once.
const MAX_CLIENTS: usize = 64;

/// What the control socket can see of the VM.
pub struct ApiContext {
    /// The VM's stop reason, for `quit`.
    pub exit: Arc<VmExit>,
    /// The display device, if any.
    pub display: Option<Arc<crate::display::DisplayHandle>>,
    /// The VM's run state, for `stop`, `cont` and `query-status`.
    pub pause: Arc<crate::pause::Pause>,
    /// The PS/2 keyboard and mouse.
    pub input: Option<InputHandle>,
}

struct Client {
    stream: Arc<Mutex<UnixStream>>,
    input: Vec<u8>,
}

/// The listening socket and its clients, on the event loop.
pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    clients: HashMap<RawFd, Client>,
    context: Arc<ApiContext>,
}

impl ApiServer {
    /// Listens on `path` (removing a stale socket file first).
    pub fn bind(path: &Path, context: ApiContext) -> io::Result<Self> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let context = Arc::new(context);
        Ok(ApiServer {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
            context,
        })
    }

    fn accept(&mut self, ops: &mut EventOps) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_CLIENTS {
                log::warn!("api: too many clients; refusing a connection");
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.as_raw_fd();
            let stream = Arc::new(Mutex::new(stream));
            send(&stream, &greeting());
            if ops.add(Events::new_raw(fd, EventSet::IN)).is_ok() {
                self.clients.insert(
                    fd,
                    Client {
                        stream,
                        input: Vec::new(),
                    },
                );
            }
        }
    }

    fn read_client(&mut self, fd: RawFd, ops: &mut EventOps) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let result = client
            .stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(&mut buf);
        let keep = match result {
            Ok(0) => false,
            Ok(n) => {
                client.input.extend_from_slice(&buf[..n]);
                self.handle_lines(fd)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false,
        };
        if !keep {
            let _ = ops.remove(Events::new_raw(fd, EventSet::IN));
            self.clients.remove(&fd);
        }
    }

    /// Answers every complete line; returns false to drop the client.
    fn handle_lines(&mut self, fd: RawFd) -> bool {
        let Some(client) = self.clients.get_mut(&fd) else {
            return false;
        };
        while let Some(end) = client.input.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = client.input.drain(..=end).collect();
            let stream = client.stream.clone();
            if let Some(reply) = execute(&self.context, &line, &stream) {
                send(&stream, &reply);
            }
        }
        if client.input.len() > MAX_LINE {
            let reply = error("GenericError", "request line too long");
            send(&client.stream, &reply);
            return false;
        }
        true
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl MutEventSubscriber for ApiServer {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.listener, EventSet::IN)) {
            log::error!("api: cannot watch the control socket: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.listener.as_raw_fd() {
            self.accept(ops);
        } else {
            self.read_client(events.fd(), ops);
        }
    }
}

fn greeting() -> Value {
    json!({"QMP": {"version": {"package": "vmm", "vmm": env!("CARGO_PKG_VERSION")},
                   "capabilities": []}})
}

fn error(class: &str, desc: &str) -> Value {
    json!({"error": {"class": class, "desc": desc}})
}

/// Writes `value` and a newline; a client that does not read its replies loses them.
fn send(stream: &Mutex<UnixStream>, value: &Value) {
    let mut line = value.to_string();
    line.push('\n');
    let mut stream = stream.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = stream.write_all(line.as_bytes()) {
        log::debug!("api: reply not delivered: {e}");
    }
}

/// Runs one request line; None when the reply comes later (screendump).
fn execute(
    context: &Arc<ApiContext>,
    line: &[u8],
    stream: &Arc<Mutex<UnixStream>>,
) -> Option<Value> {
    let request: Value = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => return Some(error("GenericError", &format!("JSON parse error: {e}"))),
    };
    let Some(command) = request.get("execute").and_then(Value::as_str) else {
        return Some(error(
            "GenericError",
            "expected an object with an \"execute\" string",
        ));
    };
    let arguments = request.get("arguments").cloned().unwrap_or(json!({}));

    match command {
        "qmp_capabilities" => Some(json!({"return": {}})),
        "query-status" => Some(query_status(context)),
        "stop" => {
            context.pause.stop();
            Some(json!({"return": {}}))
        }
        "cont" => {
            context.pause.resume();
            Some(json!({"return": {}}))
        }
        "query-qxl" => Some(query_qxl(context)),
        "quit" => {
            context.exit.stop(VmStop::UserQuit);
            Some(json!({"return": {}}))
        }
        "screendump" => screendump(context, &arguments, stream.clone()),
        "input-send-event" => Some(input_send_event(context, &arguments)),
        "x-qxl-drop-interrupts" => Some(drop_interrupts(context, &arguments)),
        other => Some(error(
            "CommandNotFound",
            &format!("The command {other} has not been found"),
        )),
    }
}

/// QMP's status names: "paused" from the moment `stop` is asked, as QEMU reports it once it
/// returns (here vCPUs park at their next exit, within microseconds of the kick).
fn query_status(context: &ApiContext) -> Value {
    if context.pause.is_requested() {
        json!({"return": {"status": "paused", "running": false}})
    } else {
        json!({"return": {"status": "running", "running": true}})
    }
}

fn query_qxl(context: &ApiContext) -> Value {
    let Some(display) = &context.display else {
        return error(
            "DeviceNotFound",
            "this VM has no QXL device (see --display)",
        );
    };
    let shared = &display.shared;
    let ports: Vec<Value> = shared
        .stats
        .figures()
        .iter()
        .map(|p| {
            json!({"port": p.port, "name": devices::qxl::port_name(u64::from(p.port)),
                   "count": p.count, "p50-ns": p.p50_ns, "p99-ns": p.p99_ns, "max-ns": p.max_ns,
                   "total-ns": p.total_ns})
        })
        .collect();
    let engine = display.engine_stats();
    json!({"return": {
        "ports": ports,
        "queue-depth": display.queue_depth(),
        "interrupts": shared.interrupts_raised.load(Ordering::Relaxed),
        "interrupts-dropped": shared.interrupts_dropped.load(Ordering::Relaxed),
        "ioeventfd-notifies": shared.ioeventfd_notifies.load(Ordering::Relaxed),
        "msi": display.msi_enabled(),
        "requests-refused": shared.requests_refused.load(Ordering::Relaxed),
        "engine": engine,
    }})
}

/// The most interrupts one `x-qxl-drop-interrupts` may drop.
const MAX_DROPPED_INTERRUPTS: u64 = 1000;

/// For testing guest drivers: the QXL device loses its next `count` interrupts.
fn drop_interrupts(context: &ApiContext, arguments: &Value) -> Value {
    let Some(display) = &context.display else {
        return error(
            "DeviceNotFound",
            "this VM has no QXL device (see --display)",
        );
    };
    match arguments.get("count").and_then(Value::as_u64) {
        Some(count @ 0..=MAX_DROPPED_INTERRUPTS) => {
            display.shared.drop_interrupts(count);
            json!({"return": {}})
        }
        _ => error(
            "GenericError",
            &format!("'count' must be a number from 0 to {MAX_DROPPED_INTERRUPTS}"),
        ),
    }
}

fn input_send_event(context: &ApiContext, arguments: &Value) -> Value {
    let Some(input) = &context.input else {
        return error("DeviceNotFound", "this VM has no input device");
    };
    match qmp_input::parse_events(arguments) {
        Ok(events) => {
            qmp_input::send_events(input, &events);
            json!({"return": {}})
        }
        Err(why) => error("GenericError", &why),
    }
}

fn screendump(
    context: &Arc<ApiContext>,
    arguments: &Value,
    stream: Arc<Mutex<UnixStream>>,
) -> Option<Value> {
    let Some(filename) = arguments.get("filename").and_then(Value::as_str) else {
        return Some(error(
            "GenericError",
            "screendump needs a \"filename\" argument",
        ));
    };
    let Some(display) = context.display.clone() else {
        return Some(error(
            "DeviceNotFound",
            "this VM has no display device (see --display)",
        ));
    };

    let filename = PathBuf::from(filename);
    let spawned = std::thread::Builder::new()
        .name("api-screendump".into())
        .spawn(move || {
            let reply = match display.screenshot(SCREENDUMP_TIMEOUT) {
                Ok(Some(shot)) => match write_png(&filename, &shot) {
                    Ok(()) => json!({"return": {}}),
                    Err(e) => error(
                        "GenericError",
                        &format!("cannot write {}: {e}", filename.display()),
                    ),
                },
                Ok(None) => error("GenericError", "the guest has no primary surface yet"),
                Err(why) => error("GenericError", &why),
            };
            send(&stream, &reply);
        });
    match spawned {
        Ok(_) => None,
        Err(e) => Some(error(
            "GenericError",
            &format!("cannot start the screendump: {e}"),
        )),
    }
}

/// A copy of the primary surface: top-down 0x00RRGGBB pixels.
pub struct Screenshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels, `width * height` of them.
    pub pixels: Vec<u32>,
}

/// Writes `shot` as an 8-bit RGB PNG.
pub fn write_png(path: &Path, shot: &Screenshot) -> io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut encoder = png::Encoder::new(io::BufWriter::new(file), shot.width, shot.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(io::Error::other)?;
    // 0x00RRGGBB to R, G, B bytes: the big-endian bytes after the unused top one.
    let rgb: Vec<u8> = shot
        .pixels
        .iter()
        .flat_map(|p| {
            let [_, r, g, b] = p.to_be_bytes();
            [r, g, b]
        })
        .collect();
    writer.write_image_data(&rgb).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use devices::bus::BusDevice;
    use devices::legacy::I8042;
    use devices::EventFdInterrupt;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;

    fn context() -> Arc<ApiContext> {
        Arc::new(ApiContext {
            exit: Arc::new(VmExit::new().unwrap()),
            display: None,
            pause: Arc::new(crate::pause::Pause::new(None)),
            input: None,
        })
    }

    fn run(line: &str) -> Value {
        run_in(&context(), line)
    }

    fn run_in(context: &Arc<ApiContext>, line: &str) -> Value {
        let (a, _b) = UnixStream::pair().unwrap();
        execute(context, line.as_bytes(), &Arc::new(Mutex::new(a))).unwrap()
    }

    #[test]
    fn status_and_capabilities() {
        assert_eq!(
            run(r#"{"execute": "qmp_capabilities"}"#),
            json!({"return": {}})
        );
        let status = run(r#"{"execute": "query-status"}"#);
        assert_eq!(status["return"]["status"], "running");
    }

    #[test]
    fn malformed_requests_get_errors() {
        assert_eq!(run("{nope")["error"]["class"], "GenericError");
        assert_eq!(run(r#"{"exec": 1}"#)["error"]["class"], "GenericError");
        assert_eq!(
            run(r#"{"execute": "frobnicate"}"#)["error"]["class"],
            "CommandNotFound"
        );
        assert_eq!(
            run(r#"{"execute": "screendump"}"#)["error"]["class"],
            "GenericError"
        );
        let no_display = run(r#"{"execute": "screendump", "arguments": {"filename": "/x"}}"#);
        assert_eq!(no_display["error"]["class"], "DeviceNotFound");
        let drop = run(r#"{"execute": "x-qxl-drop-interrupts", "arguments": {"count": 1}}"#);
        assert_eq!(drop["error"]["class"], "DeviceNotFound");
    }

    #[test]
    fn stop_and_cont_change_the_status() {
        let ctx = context();
        let (a, _b) = UnixStream::pair().unwrap();
        let stream = Arc::new(Mutex::new(a));
        let call = |line: &str| execute(&ctx, line.as_bytes(), &stream).unwrap();

        assert_eq!(call(r#"{"execute": "stop"}"#), json!({"return": {}}));
        let status = call(r#"{"execute": "query-status"}"#);
        assert_eq!(
            status["return"],
            json!({"status": "paused", "running": false})
        );
        assert_eq!(call(r#"{"execute": "cont"}"#), json!({"return": {}}));
        let status = call(r#"{"execute": "query-status"}"#);
        assert_eq!(
            status["return"],
            json!({"status": "running", "running": true})
        );
    }

    #[test]
    fn quit_stops_the_vm() {
        let ctx = context();
        let (a, _b) = UnixStream::pair().unwrap();
        let reply = execute(&ctx, br#"{"execute": "quit"}"#, &Arc::new(Mutex::new(a)));
        assert_eq!(reply, Some(json!({"return": {}})));
        assert_eq!(ctx.exit.reason(), Some(VmStop::UserQuit));
    }

    /// Reads what the guest would find on port 0x60.
    fn guest_reads(i8042: &Mutex<I8042>) -> Vec<u8> {
        let mut i8042 = i8042.lock().unwrap();
        let mut bytes = Vec::new();
        loop {
            let mut status = [0];
            i8042.read(0x60, 4, &mut status);
            if status[0] & 1 == 0 {
                return bytes;
            }
            let mut byte = [0];
            i8042.read(0x60, 0, &mut byte);
            bytes.push(byte[0]);
        }
    }

    #[test]
    fn input_send_event_types_on_the_keyboard() {
        let irq = || Arc::new(EventFdInterrupt::new(EventFd::new(0).unwrap()));
        let exit = Arc::new(VmExit::new().unwrap());
        let i8042 = Arc::new(Mutex::new(I8042::new(exit.clone(), irq(), irq())));
        let ctx = Arc::new(ApiContext {
            exit,
            display: None,
            pause: Arc::new(crate::pause::Pause::new(None)),
            input: Some(InputHandle::new(i8042.clone())),
        });

        let request = r#"{"execute": "input-send-event", "arguments": {"events": [
            {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}},
            {"type": "key", "data": {"down": false, "key": {"type": "number", "data": 200}}},
            {"type": "rel", "data": {"axis": "x", "value": 5}}]}}"#;
        assert_eq!(
            run_in(&ctx, &request.replace('\n', "")),
            json!({"return": {}})
        );
        // Power-on state: translated set 1, the mouse not yet enabled by a driver.
        assert_eq!(guest_reads(&i8042), [0x1e, 0xe0, 0xc8]);

        let bad = r#"{"execute": "input-send-event", "arguments": {"events": [
            {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}},
            {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "nope"}}}]}}"#;
        let reply = run_in(&ctx, &bad.replace('\n', ""));
        assert_eq!(reply["error"]["class"], "GenericError");
        assert_eq!(
            guest_reads(&i8042),
            Vec::<u8>::new(),
            "nothing is sent when one event is bad"
        );

        let no_input = run(r#"{"execute": "input-send-event", "arguments": {"events": []}}"#);
        assert_eq!(no_input["error"]["class"], "DeviceNotFound");
    }

    #[test]
    fn png_round_trip() {
        let path = std::env::temp_dir().join(format!("vmm-api-{}.png", std::process::id()));
        let shot = Screenshot {
            width: 2,
            height: 1,
            pixels: vec![0x00ff_0000, 0x0000_80ff],
        };
        write_png(&path, &shot).unwrap();

        let decoder = png::Decoder::new(io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(&buf[..6], &[0xff, 0, 0, 0, 0x80, 0xff]);
        std::fs::remove_file(path).unwrap();
    }
}
