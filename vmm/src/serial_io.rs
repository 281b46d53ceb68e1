// SPDX-License-Identifier: Apache-2.0
//! The host side of the serial console: stdin into the UART's receive FIFO (on the event
//! loop), and the UART's output queue out to stdout or a file (on its own thread).
//!
//! Input is taken from stdin only as fast as the guest drains the FIFO: when the FIFO is full,
//! stdin leaves the poll set until the UART reports it empty. A closed or hung-up terminal is
//! logged once and dropped; the guest keeps running without a console.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use devices::legacy::{SerialDevice, SerialOutput};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::exit::{VmExit, VmStop};

/// Ctrl-A: the console escape key; Ctrl-A X quits, Ctrl-A Ctrl-A sends one Ctrl-A.
const ESCAPE: u8 = 0x01;
/// Bytes read from stdin at a time: the size of the UART's FIFO.
const READ_CHUNK: usize = 64;

/// Feeds stdin into the UART.
pub struct SerialInput {
    stdin: File,
    /// Whether epoll can watch stdin; regular files cannot be polled and are always ready.
    pollable: bool,
    watching_stdin: bool,
    fifo_empty_evt: EventFd,
    serial: Arc<Mutex<SerialDevice>>,
    exit: Arc<VmExit>,
    pending: Vec<u8>,
    escape_keys: bool,
    escape_seen: bool,
    closed: bool,
}

impl SerialInput {
    /// Reads stdin into `serial`; `escape_keys` turns on Ctrl-A X (for a terminal).
    pub fn new(
        serial: Arc<Mutex<SerialDevice>>,
        fifo_empty_evt: EventFd,
        exit: Arc<VmExit>,
        escape_keys: bool,
    ) -> io::Result<Self> {
        // SAFETY: the duplicate is a new descriptor owned by the File from here on.
        let fd = unsafe { libc::dup(libc::STDIN_FILENO) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created by dup and nothing else owns it.
        let stdin = unsafe { File::from_raw_fd(fd) };
        let pollable = !stdin.metadata()?.is_file();

        Ok(SerialInput {
            stdin,
            pollable,
            watching_stdin: false,
            fifo_empty_evt,
            serial,
            exit,
            pending: Vec::with_capacity(READ_CHUNK),
            escape_keys,
            escape_seen: false,
            closed: false,
        })
    }

    fn stdin_fd(&self) -> RawFd {
        self.stdin.as_raw_fd()
    }

    /// Reads one chunk of stdin into `pending`, after the escape-key filter.
    fn read_stdin(&mut self) {
        let mut buf = [0u8; READ_CHUNK];
        match self.stdin.read(&mut buf) {
            Ok(0) => self.close("end of input"),
            Ok(n) => self.filter_escape(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.close(&format!("read error: {e}")),
        }
    }

    fn filter_escape(&mut self, input: &[u8]) {
        for &byte in input {
            if !self.escape_keys {
                self.pending.push(byte);
            } else if self.escape_seen {
                self.escape_seen = false;
                match byte {
                    b'x' | b'X' => self.exit.stop(VmStop::UserQuit),
                    ESCAPE => self.pending.push(ESCAPE),
                    _ => {}
                }
            } else if byte == ESCAPE {
                self.escape_seen = true;
            } else {
                self.pending.push(byte);
            }
        }
    }

    fn close(&mut self, why: &str) {
        // Info, not warn: a hung-up terminal also fails the output side, which says so.
        if !self.closed {
            log::info!("serial console input closed ({why}); the guest keeps running");
        }
        self.closed = true;
    }

    /// Moves pending bytes into the FIFO; returns true if all of them fit.
    fn flush_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }

        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let taken = serial.enqueue_input(&self.pending);
        drop(serial);
        self.pending.drain(..taken);
        self.pending.is_empty()
    }

    /// Reads and forwards as much input as the FIFO takes, and keeps stdin in the poll set
    /// only while there is room.
    fn pump(&mut self, ops: &mut EventOps) {
        loop {
            if !self.flush_pending() || self.closed {
                break;
            }
            if self.pollable {
                break;
            }
            // A regular file is always readable: feed it as the guest drains the FIFO.
            let room = self
                .serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .input_capacity();
            if room == 0 {
                break;
            }
            self.read_stdin();
        }
        self.update_interest(ops);
    }

    fn update_interest(&mut self, ops: &mut EventOps) {
        let want = self.pollable && !self.closed && self.pending.is_empty();
        let stdin = Events::new_raw(self.stdin_fd(), EventSet::IN);
        if want && !self.watching_stdin {
            if let Err(e) = ops.add(stdin) {
                // epoll refuses some descriptors (/dev/null, regular files): they are
                // always readable, so read them as the guest drains the FIFO instead.
                log::debug!("stdin cannot be polled ({e}); reading it as the guest drains");
                self.pollable = false;
                return self.pump(ops);
            }
        } else if !want && self.watching_stdin {
            let _ = ops.remove(stdin);
        }
        self.watching_stdin = want;
    }
}

impl MutEventSubscriber for SerialInput {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fifo_empty_evt, EventSet::IN)) {
            log::warn!("cannot watch the serial FIFO: {e}; console input is off");
            return;
        }
        self.pump(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.fifo_empty_evt.as_raw_fd() {
            let _ = self.fifo_empty_evt.read();
        } else if events
            .event_set()
            .intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR)
        {
            self.read_stdin();
        }
        self.pump(ops);
    }
}

/// Wakes the main loop when the VM should stop.
pub struct ExitWatcher {
    exit: Arc<VmExit>,
    /// Set once the exit event fired.
    pub fired: Arc<std::sync::atomic::AtomicBool>,
}

impl ExitWatcher {
    /// Watches `exit`.
    pub fn new(exit: Arc<VmExit>, fired: Arc<std::sync::atomic::AtomicBool>) -> Self {
        ExitWatcher { exit, fired }
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        ops.add(Events::new(&self.exit.exit_evt, EventSet::IN))
            .expect("exit event is pollable");
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.exit.exit_evt.read();
        self.fired.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Starts the thread that writes guest output to `out`.
pub fn spawn_output_writer(
    output: Arc<SerialOutput>,
    mut out: Box<dyn Write + Send>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("serial-out".into())
        .spawn(move || {
            let mut chunk = Vec::with_capacity(devices::legacy::SERIAL_OUTPUT_CAPACITY);
            while output.take(&mut chunk, Duration::from_millis(500)) {
                if chunk.is_empty() {
                    continue;
                }
                if let Err(e) = out.write_all(&chunk).and_then(|_| out.flush()) {
                    log::warn!(
                        "serial console output failed ({e}); guest output is dropped from now"
                    );
                    output.close();
                    return;
                }
            }
        })
}
