// SPDX-License-Identifier: Apache-2.0
//! The display thread of a QXL device: it owns the [`QxlEngine`] and does all the work that
//! port writes ask for, so that vCPUs never do it.
//!
//! It sleeps in epoll on two events: the device's wake event (requests and notify ports) and
//! the INTx resample event (the guest acknowledged the level interrupt). Commands are taken
//! from the rings in bounded batches, so a request or a resample never waits behind a long
//! stream of drawing.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::device::{Completion, QxlRequest, QxlRequestKind, QxlShared};
use super::engine::QxlEngine;
use super::regs::{QXL_INTERRUPT_ERROR, QXL_INTERRUPT_IO_CMD};

/// Commands taken from a ring before the thread looks at its events again.
const BATCH: usize = 64;
const WAKE: u64 = 0;
const RESAMPLE: u64 = 1;
const QUERY: u64 = 2;
const NOTIFY_CMD: u64 = 3;
const NOTIFY_CURSOR: u64 = 4;

/// What other threads may ask of the display thread.
pub enum DisplayQuery {
    /// Copy the primary surface (top-down 0x00RRGGBB) and answer on the channel.
    Screenshot(std::sync::mpsc::SyncSender<Option<(super::SurfaceInfo, Vec<u32>)>>),
}

/// Handles to a running display thread. The thread runs as long as the VM.
pub struct QxlWorkerHandle {
    query_evt: EventFd,
    queries: Arc<Mutex<Vec<DisplayQuery>>>,
    _thread: JoinHandle<()>,
}

impl QxlWorkerHandle {
    /// Asks the thread something; it answers on the channel inside `query`.
    pub fn query(&self, query: DisplayQuery) {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(query);
        let _ = self.query_evt.write(1);
    }
}

struct Worker {
    engine: QxlEngine,
    shared: Arc<QxlShared>,
    requests: Receiver<QxlRequest>,
    resample_evt: EventFd,
    queries: Arc<Mutex<Vec<DisplayQuery>>>,
    query_evt: EventFd,
    more_commands: bool,
    more_cursor: bool,
    /// The request queue's sender is gone: the device was dropped.
    stopping: bool,
}

/// Starts the display thread named `name`.
pub fn spawn(
    name: &str,
    engine: QxlEngine,
    shared: Arc<QxlShared>,
    requests: Receiver<QxlRequest>,
    resample_evt: EventFd,
) -> std::io::Result<QxlWorkerHandle> {
    let query_evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?;
    let queries = Arc::new(Mutex::new(Vec::new()));
    let mut worker = Worker {
        engine,
        shared,
        requests,
        resample_evt,
        queries: queries.clone(),
        query_evt: query_evt.try_clone()?,
        more_commands: false,
        more_cursor: false,
        stopping: false,
    };
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || worker.run())?;
    Ok(QxlWorkerHandle {
        query_evt,
        queries,
        _thread: thread,
    })
}

impl Worker {
    fn run(&mut self) {
        let epoll = match self.epoll() {
            Ok(epoll) => epoll,
            Err(e) => {
                log::error!("qxl: display thread cannot poll its events: {e}; the display stops");
                return;
            }
        };

        let mut events = [EpollEvent::default(); 8];
        while !self.stopping {
            let timeout = if self.more_commands || self.more_cursor {
                0
            } else {
                -1
            };
            let ready = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    log::error!("qxl: display thread poll failed: {e}; the display stops");
                    return;
                }
            };
            for event in &events[..ready] {
                self.dispatch(event.data());
            }
            self.do_work();
        }
    }

    fn epoll(&self) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        for (fd, token) in [
            (self.shared.wake_evt.as_raw_fd(), WAKE),
            (self.resample_evt.as_raw_fd(), RESAMPLE),
            (self.query_evt.as_raw_fd(), QUERY),
            (self.shared.notify_cmd_evt.as_raw_fd(), NOTIFY_CMD),
            (self.shared.notify_cursor_evt.as_raw_fd(), NOTIFY_CURSOR),
        ] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        Ok(epoll)
    }

    fn dispatch(&mut self, token: u64) {
        match token {
            WAKE => {
                let _ = self.shared.wake_evt.read();
            }
            RESAMPLE => {
                let _ = self.resample_evt.read();
                self.shared.update_irq_level();
            }
            NOTIFY_CMD => {
                self.ioeventfd_notify(&self.shared.notify_cmd_evt, &self.shared.notify_cmd)
            }
            NOTIFY_CURSOR => {
                self.ioeventfd_notify(&self.shared.notify_cursor_evt, &self.shared.notify_cursor)
            }
            _ => {
                let _ = self.query_evt.read();
                self.answer_queries();
            }
        }
    }

    /// A notify port written through KVM's ioeventfd: the same as the trapped write, except
    /// that the guest-bug state is checked here.
    fn ioeventfd_notify(&self, evt: &EventFd, flag: &AtomicBool) {
        if let Ok(count) = evt.read() {
            self.shared
                .ioeventfd_notifies
                .fetch_add(count, Ordering::Relaxed);
        }
        if !self.shared.guest_bug.load(Ordering::Acquire) {
            flag.store(true, Ordering::Release);
        }
    }

    fn do_work(&mut self) {
        loop {
            match self.requests.try_recv() {
                Ok(request) => {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    self.execute(request);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
            }
        }

        if self.shared.notify_oom.swap(false, Ordering::AcqRel) {
            let bits = self.engine.oom();
            self.raise(bits);
        }
        if self.shared.flush_release.swap(false, Ordering::AcqRel) {
            let bits = self.engine.flush_release();
            self.raise(bits);
        }
        if self.shared.notify_cmd.swap(false, Ordering::AcqRel) || self.more_commands {
            let progress = self.engine.process_commands(BATCH);
            self.more_commands = progress.more;
            self.raise(progress.interrupts);
            if log::log_enabled!(log::Level::Trace) {
                let mut damage = Vec::new();
                self.engine.take_damage(&mut damage);
                log::trace!("qxl: {} commands, damage {damage:?}", progress.processed);
            }
        }
        if self.shared.notify_cursor.swap(false, Ordering::AcqRel) || self.more_cursor {
            let progress = self.engine.process_cursor_commands(BATCH);
            self.more_cursor = progress.more;
            self.raise(progress.interrupts);
        }

        let stats = self.engine.stats();
        let mut snapshot = self
            .shared
            .engine_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *snapshot != *stats {
            snapshot.clone_from(stats);
        }
    }

    fn raise(&self, bits: u32) {
        if bits != 0 {
            self.shared.raise_interrupt(bits);
        }
    }

    fn execute(&mut self, request: QxlRequest) {
        let result = self.run_request(request.kind);
        if let Err(e) = &result {
            self.shared
                .guest_bug(format_args!("{:?}: {e}", request.kind));
        }
        let bits = self.engine.take_interrupts();
        self.raise(bits);

        match request.completion {
            Completion::Interrupt => {
                self.shared.async_busy.store(false, Ordering::Release);
                let error = if result.is_err() {
                    QXL_INTERRUPT_ERROR
                } else {
                    0
                };
                self.raise(QXL_INTERRUPT_IO_CMD | error);
            }
            Completion::Sync(slot) => self.shared.complete_sync(slot),
            Completion::None => {}
        }
    }

    fn run_request(&mut self, kind: QxlRequestKind) -> Result<(), super::QxlGuestError> {
        use QxlRequestKind::*;
        match kind {
            UpdateArea => self.engine.update_area(),
            MemslotAdd(id) => {
                let [bar0, bar1] = &self.shared.bar_addresses;
                let (bar0, bar1) = (bar0.load(Ordering::Acquire), bar1.load(Ordering::Acquire));
                self.engine.set_bar_addresses(bar0, bar1);
                self.engine.memslot_add(id)
            }
            MemslotDel(id) => self.engine.memslot_del(id),
            CreatePrimary => self.engine.create_primary(),
            DestroyPrimary => {
                self.engine.destroy_primary();
                Ok(())
            }
            DestroySurface(id) => self.engine.destroy_surface(id),
            DestroyAllSurfaces => {
                self.engine.destroy_all_surfaces();
                Ok(())
            }
            FlushSurfaces => {
                let progress = self.engine.process_commands(super::DRAIN_BUDGET);
                self.raise(progress.interrupts);
                Ok(())
            }
            MonitorsConfig => self.engine.monitors_config().map(|_| ()),
            Reset => {
                self.engine.reset();
                self.more_commands = false;
                self.more_cursor = false;
                self.shared.async_busy.store(false, Ordering::Release);
                self.shared.guest_bug.store(false, Ordering::Release);
                Ok(())
            }
            Log => Ok(()),
        }
    }

    fn answer_queries(&mut self) {
        let queries = std::mem::take(&mut *self.queries.lock().unwrap_or_else(|e| e.into_inner()));
        for query in queries {
            match query {
                DisplayQuery::Screenshot(reply) => {
                    let mut pixels = Vec::new();
                    let info = self.engine.read_primary(&mut pixels);
                    let _ = reply.try_send(info.map(|info| (info, pixels)));
                }
            }
        }
    }
}
