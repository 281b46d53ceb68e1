// SPDX-License-Identifier: Apache-2.0
//! The display thread of a QXL device: it owns the [`QxlEngine`] and does all the work that
//! port writes ask for, so that vCPUs never do it.
//!
//! It sleeps in epoll on the device's wake event (requests, notify ports, resume), the notify
//! ports' ioeventfds, the INTx resample event (the guest acknowledged the level interrupt) and
//! the query event (screenshots). While the VM is paused it answers queries and leaves guest
//! memory alone. Commands are taken from the rings in bounded batches, so a request or a
//! resample never waits behind a long stream of drawing.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::device::{Completion, QxlRequest, QxlRequestKind, QxlShared};
use super::engine::QxlEngine;
use super::listener::DisplayListener;
use super::rect::Rect;
use super::regs::{QXL_INTERRUPT_ERROR, QXL_INTERRUPT_IO_CMD};
use super::surface::SurfaceInfo;

/// Commands taken from a ring before the thread looks at its events again.
const BATCH: usize = 64;
/// How often (ms) the display thread retries pushing releases that found the release ring
/// full. The guest consumes the ring without telling the device, and a revision 6 device
/// promises not to hold releases until the guest asks.
// Missing: a backoff. A guest that never consumes its release ring keeps this thread waking
// every millisecond (cheap, but not free) until it does or resets the device.
const RELEASE_RETRY_MS: i32 = 1;
const WAKE: u64 = 0;
const RESAMPLE: u64 = 1;
const QUERY: u64 = 2;
const NOTIFY_CMD: u64 = 3;
const NOTIFY_CURSOR: u64 = 4;
const REFRESH: u64 = 5;

/// What other threads may ask of the display thread.
pub enum DisplayQuery {
    /// Copy the primary surface (top-down 0x00RRGGBB) and answer on the channel.
    Screenshot(std::sync::mpsc::SyncSender<Option<(super::SurfaceInfo, Vec<u32>)>>),
}

/// Handles to a running display thread. Dropping it ends the thread and waits for it.
pub struct QxlWorkerHandle {
    query_evt: EventFd,
    queries: Arc<Mutex<Vec<DisplayQuery>>>,
    /// Tells the thread to end; it looks at it each time it wakes.
    end: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for QxlWorkerHandle {
    fn drop(&mut self) {
        self.end.store(true, Ordering::Release);
        let _ = self.query_evt.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    /// Requests taken from the queue while paused, in order, to run after resuming.
    held: VecDeque<QxlRequest>,
    /// Set by the handle's owner to end the thread.
    end: Arc<AtomicBool>,
    /// Who follows the screen, if anyone.
    listener: Option<Listener>,
    /// The request queue's sender is gone: the device was dropped.
    stopping: bool,
}

/// A [`DisplayListener`] and what the display thread last told it.
pub struct Listener {
    listener: Box<dyn DisplayListener>,
    /// Signalled when the listener has rectangles to refresh.
    refresh_evt: EventFd,
    primary: Option<SurfaceInfo>,
    cursor_serial: u64,
    rects: Vec<Rect>,
    pixels: Vec<u32>,
}

impl Listener {
    /// Follows the screen with `listener`, which signals `refresh_evt` when it wants
    /// rectangles sent again ([`DisplayListener::take_refresh`]).
    pub fn new(listener: Box<dyn DisplayListener>, refresh_evt: EventFd) -> Self {
        Listener {
            listener,
            refresh_evt,
            primary: None,
            cursor_serial: 0,
            rects: Vec::new(),
            pixels: Vec::new(),
        }
    }

    /// Tells the listener what changed since the last call.
    fn feed(&mut self, engine: &mut QxlEngine) {
        let primary = engine.primary();
        if primary != self.primary {
            match primary {
                Some(info) => self.listener.primary_created(info.width, info.height),
                None => self.listener.primary_destroyed(),
            }
            self.primary = primary;
        }

        engine.take_damage(&mut self.rects);
        self.listener.take_refresh(&mut self.rects);
        if !self.rects.is_empty() {
            log::trace!("qxl: screen updates {:?}", self.rects);
        }
        for rect in self.rects.drain(..) {
            if let Some(area) = engine.read_primary_rect(rect, &mut self.pixels) {
                self.listener.update(area, &self.pixels);
            }
        }

        let cursor = engine.cursor();
        if cursor.serial != self.cursor_serial {
            self.cursor_serial = cursor.serial;
            self.listener.cursor(cursor);
        }
    }
}

/// Starts the display thread named `name`, telling `listener` (if any) about the screen.
pub fn spawn(
    name: &str,
    engine: QxlEngine,
    shared: Arc<QxlShared>,
    requests: Receiver<QxlRequest>,
    resample_evt: EventFd,
    listener: Option<Listener>,
) -> std::io::Result<QxlWorkerHandle> {
    let query_evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?;
    let queries = Arc::new(Mutex::new(Vec::new()));
    let end = Arc::new(AtomicBool::new(false));
    let mut worker = Worker {
        engine,
        shared,
        requests,
        resample_evt,
        queries: queries.clone(),
        query_evt: query_evt.try_clone()?,
        more_commands: false,
        more_cursor: false,
        held: VecDeque::new(),
        end: end.clone(),
        listener,
        stopping: false,
    };
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || worker.run())?;
    Ok(QxlWorkerHandle {
        query_evt,
        queries,
        end,
        thread: Some(thread),
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
        while !self.stopping && !self.end.load(Ordering::Acquire) {
            let busy = self.more_commands || self.more_cursor;
            let paused = self.shared.is_paused();
            let timeout = if busy && !paused {
                0
            } else if self.engine.releases_held() && !paused {
                RELEASE_RETRY_MS
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
            if let Some(listener) = &mut self.listener {
                listener.feed(&mut self.engine);
            }
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
        if let Some(listener) = &self.listener {
            let fd = listener.refresh_evt.as_raw_fd();
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, REFRESH),
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
            REFRESH => {
                if let Some(listener) = &self.listener {
                    let _ = listener.refresh_evt.read();
                }
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
        if self.shared.is_paused() {
            self.hold_requests();
            return;
        }
        while let Some(request) = self.held.pop_front() {
            self.execute(request);
        }
        while let Some(request) = self.next_request() {
            self.execute(request);
        }
        if self.stopping {
            return;
        }

        if self.shared.notify_oom.swap(false, Ordering::AcqRel) {
            let bits = self.engine.oom();
            self.raise(bits);
        }
        let held = self.engine.releases_held();
        if self.shared.flush_release.swap(false, Ordering::AcqRel) || held {
            let bits = self.engine.flush_release();
            self.raise(bits);
        }
        if self.shared.notify_cmd.swap(false, Ordering::AcqRel) || self.more_commands {
            let progress = self.engine.process_commands(BATCH);
            self.more_commands = progress.more;
            self.raise(progress.interrupts);
            log::trace!("qxl: {} commands", progress.processed);
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

    fn next_request(&mut self) -> Option<QxlRequest> {
        match self.requests.try_recv() {
            Ok(request) => {
                self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                Some(request)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.stopping = true;
                None
            }
        }
    }

    /// While paused: takes queued requests aside, but runs a synchronous one (and all before
    /// it, to keep their order), since its vCPU waits for it before it can park. The queue's
    /// bound also bounds `held`: vCPUs are parked or about to be.
    fn hold_requests(&mut self) {
        while let Some(request) = self.next_request() {
            self.held.push_back(request);
        }
        let last_sync = self
            .held
            .iter()
            .rposition(|r| matches!(r.completion, Completion::Sync(_)));
        if let Some(last) = last_sync {
            let run: Vec<QxlRequest> = self.held.drain(..=last).collect();
            for request in run {
                self.execute(request);
            }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::sync_channel;
    use std::time::{Duration, Instant};

    use std::sync::atomic::AtomicU32;

    use vm_memory::mmap::MmapRegion;
    use vm_memory::VolatileMemory;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::qxl::regs::*;
    use crate::qxl::testutil::{test_config, PortFixture, BAR0, BAR1, RAM_SIZE, VRAM_SIZE};

    /// A display thread over fresh BARs, and the ports that feed it.
    fn running_device() -> (PortFixture, QxlWorkerHandle, u64) {
        let ram = Arc::new(MmapRegion::new(usize::try_from(RAM_SIZE).unwrap()).unwrap());
        let (f, worker, header) = running_device_over(ram, None);
        (f, worker, header)
    }

    fn running_device_over(
        ram: Arc<MmapRegion<()>>,
        listener: Option<Listener>,
    ) -> (PortFixture, QxlWorkerHandle, u64) {
        let vram = Arc::new(MmapRegion::new(usize::try_from(VRAM_SIZE).unwrap()).unwrap());
        let mut f = PortFixture::new(ram.clone());
        let engine = QxlEngine::new(ram, vram, test_config());
        let header = engine.ram_header_offset();
        f.shared.bar_addresses[0].store(BAR0, Ordering::SeqCst);
        f.shared.bar_addresses[1].store(BAR1, Ordering::SeqCst);
        let requests = std::mem::replace(&mut f.requests, sync_channel(1).1);
        let resample = EventFd::new(EFD_NONBLOCK).unwrap();
        let worker = spawn(
            "qxl-test",
            engine,
            f.shared.clone(),
            requests,
            resample,
            listener,
        )
        .unwrap();
        f.set_mask(QXL_INTERRUPT_IO_CMD);
        (f, worker, header)
    }

    fn write_header_u64(f: &PortFixture, offset: u64, value: u64) {
        let [lo, hi] = [value, value >> 32].map(|v| u32::try_from(v & 0xffff_ffff).unwrap());
        f.header(offset).store(lo, Ordering::SeqCst);
        f.header(offset + 4).store(hi, Ordering::SeqCst);
    }

    /// Waits up to two seconds for `cond`.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        cond()
    }

    fn take_io_cmd(f: &PortFixture) -> bool {
        let pending = f.header(RAM_INT_PENDING).swap(0, Ordering::SeqCst);
        pending & QXL_INTERRUPT_IO_CMD != 0
    }

    /// Memslot 1 over BAR0 below the RAM header, then a 64x32 primary at its start.
    fn set_up_primary_fields(f: &PortFixture, header: u64) {
        write_header_u64(f, RAM_MEM_SLOT, BAR0);
        write_header_u64(f, RAM_MEM_SLOT + 8, BAR0 + header);
        f.write(QXL_IO_MEMSLOT_ADD_ASYNC, 1);
        assert!(eventually(|| take_io_cmd(f)), "memslot add completed");

        let fields = [64, 32, 256, SPICE_SURFACE_FMT_32_XRGB, 0, 0, 0, 0];
        for (i, v) in (0u64..).zip(fields) {
            f.header(RAM_CREATE_SURFACE + 4 * i)
                .store(v, Ordering::SeqCst);
        }
        write_header_u64(f, RAM_CREATE_SURFACE + 32, 1 << 56);
    }

    fn screenshot(worker: &QxlWorkerHandle) -> Option<(u32, u32)> {
        let (reply, answer) = sync_channel(1);
        worker.query(DisplayQuery::Screenshot(reply));
        let shot = answer
            .recv_timeout(Duration::from_secs(2))
            .expect("an answer");
        shot.map(|(info, _)| (info.width, info.height))
    }

    #[test]
    fn a_paused_device_completes_an_async_request_only_after_resume() {
        let (f, worker, header) = running_device();
        set_up_primary_fields(&f, header);

        f.shared.pause();
        f.write(QXL_IO_CREATE_PRIMARY_ASYNC, 0);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!take_io_cmd(&f), "no completion while paused");
        assert_eq!(
            screenshot(&worker),
            None,
            "answered while paused, from the last frame"
        );

        f.shared.resume();
        assert!(
            eventually(|| take_io_cmd(&f)),
            "the completion follows the resume"
        );
        assert_eq!(screenshot(&worker), Some((64, 32)));
    }

    #[test]
    fn a_paused_device_still_serves_a_synchronous_request() {
        let (f, worker, header) = running_device();
        set_up_primary_fields(&f, header);

        f.shared.pause();
        let start = Instant::now();
        f.write(QXL_IO_CREATE_PRIMARY, 0);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the vCPU was not held"
        );
        assert_eq!(screenshot(&worker), Some((64, 32)));
        f.shared.resume();
    }

    /// Records what the display thread tells it; asks for the whole screen when `want` is set.
    #[derive(Clone, Default)]
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        want: Arc<AtomicBool>,
    }

    impl DisplayListener for Recorder {
        fn primary_created(&mut self, width: u32, height: u32) {
            self.log
                .lock()
                .unwrap()
                .push(format!("create {width}x{height}"));
        }

        fn primary_destroyed(&mut self) {
            self.log.lock().unwrap().push("destroy".into());
        }

        fn update(&mut self, rect: Rect, pixels: &[u32]) {
            let first = pixels.first().copied().unwrap_or_default();
            let (w, h) = (rect.width(), rect.height());
            self.log
                .lock()
                .unwrap()
                .push(format!("update {w}x{h} {first:#x}"));
        }

        fn cursor(&mut self, _cursor: &crate::qxl::CursorState) {}

        fn take_refresh(&mut self, out: &mut Vec<Rect>) {
            if self.want.swap(false, Ordering::SeqCst) {
                out.push(Rect::new(0, 0, 1000, 1000));
            }
        }
    }

    #[test]
    fn a_listener_follows_the_primary_and_gets_its_pixels() {
        let ram = Arc::new(MmapRegion::new(usize::try_from(RAM_SIZE).unwrap()).unwrap());
        let recorder = Recorder::default();
        let refresh = EventFd::new(EFD_NONBLOCK).unwrap();
        let listener = Listener::new(Box::new(recorder.clone()), refresh.try_clone().unwrap());
        let (f, _worker, header) = running_device_over(ram.clone(), Some(listener));
        set_up_primary_fields(&f, header);
        f.write(QXL_IO_CREATE_PRIMARY_ASYNC, 0);
        assert!(eventually(|| take_io_cmd(&f)));

        // The guest writes its first pixel; the listener then asks for the screen.
        let pixel = ram.get_atomic_ref::<AtomicU32>(0).unwrap();
        pixel.store(0xff12_3456, Ordering::SeqCst);
        recorder.want.store(true, Ordering::SeqCst);
        refresh.write(1).unwrap();
        // The new surface was cleared (damage), then the refresh read the guest's pixel.
        let expected = ["create 64x32", "update 64x32 0x0", "update 64x32 0x123456"];
        assert!(
            eventually(|| recorder.log.lock().unwrap().as_slice() == expected),
            "{:?}",
            recorder.log.lock().unwrap()
        );
    }
}
