// SPDX-License-Identifier: Apache-2.0
//! The QXL PCI function as vCPUs reach it: configuration space, the ROM BAR and the I/O port
//! BAR.
//!
//! A port write is checked and turned into a [`QxlRequest`] for the display thread
//! ([`super::worker`]), which owns the device's engine. The vCPU re-enters the guest at once
//! for the notify ports and the `_ASYNC` ports (whose completion the display thread signals
//! with `QXL_INTERRUPT_IO_CMD`); only the legacy synchronous ports make the writing vCPU wait
//! for its own request, with no lock held, so no other vCPU and no other thread waits with
//! it. `UPDATE_IRQ` is served on the vCPU itself: it only reads two words of the RAM header.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vm_memory::mmap::MmapRegion;
use vm_memory::VolatileMemory;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::engine::QxlEngineStats;
use super::regs::*;
use crate::bus::{BusDevice, SharedBusDevice};
use crate::pci::{
    BarKind, BarRegion, MsiCapability, PciConfiguration, PciDevice, PciInterrupt, COMMAND_IO,
    COMMAND_MEMORY,
};

/// Requests the display thread may have queued at once. The guest can have at most one
/// async request outstanding and each vCPU one synchronous request, so a full queue means a
/// misbehaving guest.
pub const REQUEST_QUEUE_LEN: usize = 64;
/// Number of I/O ports, as an array length.
#[allow(clippy::cast_possible_truncation)] // 25 fits every usize.
const PORTS: usize = QXL_IO_RANGE_SIZE as usize;
/// Synchronous requests that can wait at once (one per vCPU in practice).
const SYNC_SLOTS: usize = 32;
/// How long a vCPU waits for a synchronous request before giving up on it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// What a port write asks the display thread to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QxlRequestKind {
    /// QXL_IO_UPDATE_AREA(_ASYNC).
    UpdateArea,
    /// QXL_IO_MEMSLOT_ADD(_ASYNC) with the slot id.
    MemslotAdd(u8),
    /// QXL_IO_MEMSLOT_DEL with the slot id.
    MemslotDel(u8),
    /// QXL_IO_CREATE_PRIMARY(_ASYNC).
    CreatePrimary,
    /// QXL_IO_DESTROY_PRIMARY(_ASYNC).
    DestroyPrimary,
    /// QXL_IO_DESTROY_SURFACE_WAIT / _ASYNC with the surface id.
    DestroySurface(u32),
    /// QXL_IO_DESTROY_ALL_SURFACES(_ASYNC).
    DestroyAllSurfaces,
    /// QXL_IO_FLUSH_SURFACES_ASYNC.
    FlushSurfaces,
    /// QXL_IO_MONITORS_CONFIG_ASYNC.
    MonitorsConfig,
    /// QXL_IO_RESET.
    Reset,
    /// QXL_IO_LOG.
    Log,
}

/// How the writer of a request learns that it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// Raise QXL_INTERRUPT_IO_CMD (an `_ASYNC` port).
    Interrupt,
    /// Wake the vCPU waiting in this synchronous slot.
    Sync(usize),
    /// Nothing (fire and forget).
    None,
}

/// A request from a port write to the display thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QxlRequest {
    /// What to do.
    pub kind: QxlRequestKind,
    /// How to report completion.
    pub completion: Completion,
}

/// Port counters and vCPU-side handling times, per port.
pub struct QxlPortStats {
    counts: [AtomicU64; PORTS],
    /// Log2 histogram of handling time in ns per port: bucket i holds [2^i, 2^(i+1)).
    histograms: Box<[[AtomicU64; 40]]>,
    max_ns: [AtomicU64; PORTS],
    total_ns: [AtomicU64; PORTS],
}

/// The spice-protocol name of port `port`, without the QXL_IO_ prefix.
pub fn port_name(port: u64) -> &'static str {
    const NAMES: [&str; PORTS] = [
        "NOTIFY_CMD",
        "NOTIFY_CURSOR",
        "UPDATE_AREA",
        "UPDATE_IRQ",
        "NOTIFY_OOM",
        "RESET",
        "SET_MODE",
        "LOG",
        "MEMSLOT_ADD",
        "MEMSLOT_DEL",
        "DETACH_PRIMARY",
        "ATTACH_PRIMARY",
        "CREATE_PRIMARY",
        "DESTROY_PRIMARY",
        "DESTROY_SURFACE_WAIT",
        "DESTROY_ALL_SURFACES",
        "UPDATE_AREA_ASYNC",
        "MEMSLOT_ADD_ASYNC",
        "CREATE_PRIMARY_ASYNC",
        "DESTROY_PRIMARY_ASYNC",
        "DESTROY_SURFACE_ASYNC",
        "DESTROY_ALL_SURFACES_ASYNC",
        "FLUSH_SURFACES_ASYNC",
        "FLUSH_RELEASE",
        "MONITORS_CONFIG_ASYNC",
    ];
    usize::try_from(port)
        .ok()
        .and_then(|p| NAMES.get(p))
        .copied()
        .unwrap_or("unknown")
}

/// Per-port figures for `query-qxl`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortFigures {
    /// Port number.
    pub port: u8,
    /// Writes seen.
    pub count: u64,
    /// Median vCPU-side time in ns (bucket upper bound).
    pub p50_ns: u64,
    /// 99th percentile in ns (bucket upper bound).
    pub p99_ns: u64,
    /// Longest in ns.
    pub max_ns: u64,
    /// All writes together, in ns.
    pub total_ns: u64,
}

impl QxlPortStats {
    fn new() -> Self {
        let histograms = (0..QXL_IO_RANGE_SIZE)
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect();
        QxlPortStats {
            counts: Default::default(),
            histograms,
            max_ns: Default::default(),
            total_ns: Default::default(),
        }
    }

    fn record(&self, port: usize, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let bucket = (63 - ns.leading_zeros() as usize).min(39);
        self.counts[port].fetch_add(1, Ordering::Relaxed);
        self.histograms[port][bucket].fetch_add(1, Ordering::Relaxed);
        self.max_ns[port].fetch_max(ns, Ordering::Relaxed);
        self.total_ns[port].fetch_add(ns, Ordering::Relaxed);
    }

    /// Figures for every port written at least once.
    pub fn figures(&self) -> Vec<PortFigures> {
        let mut out = Vec::new();
        for (port, number) in (0..PORTS).zip(0u8..) {
            let count = self.counts[port].load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let buckets: Vec<u64> = self.histograms[port]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            out.push(PortFigures {
                port: number,
                count,
                p50_ns: percentile(&buckets, 50),
                p99_ns: percentile(&buckets, 99),
                max_ns: self.max_ns[port].load(Ordering::Relaxed),
                total_ns: self.total_ns[port].load(Ordering::Relaxed),
            });
        }
        out
    }
}

/// The upper bound of the bucket holding the `pct` percentile.
fn percentile(buckets: &[u64], pct: u64) -> u64 {
    let total: u64 = buckets.iter().sum();
    let target = (total * pct).div_ceil(100).max(1);
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= target {
            return 1u64 << (i + 1).min(63);
        }
    }
    0
}

/// A slot a vCPU waits in for its synchronous request.
#[derive(Default)]
struct SyncSlot {
    done: Mutex<bool>,
    cv: Condvar,
}

/// State shared by the vCPU side and the display thread.
pub struct QxlShared {
    requests: SyncSender<QxlRequest>,
    /// Wakes the display thread: requests, notify ports.
    pub wake_evt: EventFd,
    /// NOTIFY_CMD was written.
    pub notify_cmd: AtomicBool,
    /// NOTIFY_CURSOR was written.
    pub notify_cursor: AtomicBool,
    /// Signalled by KVM (an ioeventfd) when the guest writes NOTIFY_CMD, without an exit.
    pub notify_cmd_evt: EventFd,
    /// Signalled by KVM when the guest writes NOTIFY_CURSOR.
    pub notify_cursor_evt: EventFd,
    /// Notify-port writes that KVM delivered through the ioeventfds.
    pub ioeventfd_notifies: AtomicU64,
    /// NOTIFY_OOM was written.
    pub notify_oom: AtomicBool,
    /// FLUSH_RELEASE was written.
    pub flush_release: AtomicBool,
    /// An `_ASYNC` request is outstanding.
    pub async_busy: AtomicBool,
    /// The guest did something invalid; only RESET is served until it resets.
    pub guest_bug: AtomicBool,
    sync_used: AtomicU32,
    sync_slots: Vec<SyncSlot>,
    /// Port statistics.
    pub stats: QxlPortStats,
    /// Interrupts raised towards the guest.
    pub interrupts_raised: AtomicU64,
    /// Interrupts still to be dropped on purpose (see [`Self::drop_interrupts`]).
    drops_wanted: AtomicU64,
    /// Interrupts dropped on purpose.
    pub interrupts_dropped: AtomicU64,
    /// Requests refused because the queue was full or the guest misbehaved.
    pub requests_refused: AtomicU64,
    /// Current guest addresses of BAR 0 and BAR 1, for memslot checks.
    pub bar_addresses: [AtomicU64; 2],
    /// Requests queued and not yet taken by the display thread.
    pub queued: AtomicUsize,
    /// The engine's counters, copied by the display thread after each round of work.
    pub engine_stats: Mutex<QxlEngineStats>,
    /// The VM is paused: the display thread leaves guest memory alone (see [`Self::pause`]).
    paused: AtomicBool,
    ram: Arc<MmapRegion<()>>,
    ram_header: usize,
    irq: Arc<PciInterrupt>,
}

impl QxlShared {
    /// Creates the shared state and the receiving end of the request queue.
    pub fn new(
        ram: Arc<MmapRegion<()>>,
        irq: Arc<PciInterrupt>,
    ) -> std::io::Result<(Arc<Self>, Receiver<QxlRequest>)> {
        let header = ram_header_offset(ram.size() as u64).expect("RAM BAR holds the header");
        let (requests, receiver) = std::sync::mpsc::sync_channel(REQUEST_QUEUE_LEN);
        let shared = QxlShared {
            requests,
            wake_evt: EventFd::new(EFD_NONBLOCK)?,
            notify_cmd: AtomicBool::new(false),
            notify_cursor: AtomicBool::new(false),
            notify_cmd_evt: EventFd::new(EFD_NONBLOCK)?,
            notify_cursor_evt: EventFd::new(EFD_NONBLOCK)?,
            ioeventfd_notifies: AtomicU64::new(0),
            notify_oom: AtomicBool::new(false),
            flush_release: AtomicBool::new(false),
            async_busy: AtomicBool::new(false),
            guest_bug: AtomicBool::new(false),
            sync_used: AtomicU32::new(0),
            sync_slots: (0..SYNC_SLOTS).map(|_| SyncSlot::default()).collect(),
            stats: QxlPortStats::new(),
            interrupts_raised: AtomicU64::new(0),
            drops_wanted: AtomicU64::new(0),
            interrupts_dropped: AtomicU64::new(0),
            requests_refused: AtomicU64::new(0),
            bar_addresses: [AtomicU64::new(0), AtomicU64::new(0)],
            queued: AtomicUsize::new(0),
            engine_stats: Mutex::new(QxlEngineStats::default()),
            paused: AtomicBool::new(false),
            ram,
            ram_header: usize::try_from(header).expect("64-bit host"),
            irq,
        };
        Ok((Arc::new(shared), receiver))
    }

    pub(crate) fn header_word(&self, offset: u64) -> &AtomicU32 {
        let offset = self.ram_header + usize::try_from(offset).expect("header offsets are small");
        self.ram
            .get_atomic_ref::<AtomicU32>(offset)
            .expect("aligned RAM header word")
    }

    /// Sets interrupt `bits` in the RAM header and raises the interrupt if the guest unmasked
    /// any of them and they were not already pending.
    ///
    /// With MSI, a message goes out only when `int_pending & int_mask` turns non-zero: while
    /// an unmasked bit is still pending, the guest has a message it has not handled yet, and
    /// its handler takes every pending bit at once (an atomic exchange with 0). So each
    /// message finds work, none is lost, and no UPDATE_IRQ is needed.
    pub fn raise_interrupt(&self, bits: u32) {
        let old = self
            .header_word(RAM_INT_PENDING)
            .fetch_or(bits, Ordering::SeqCst);
        if old & bits == bits {
            return;
        }
        let mask = self.header_word(RAM_INT_MASK).load(Ordering::SeqCst);
        if (old | bits) & mask == 0 || (self.irq.msi_enabled() && old & mask != 0) {
            return;
        }
        self.deliver();
    }

    /// Re-asserts the level interrupt if `int_pending & int_mask` is still non-zero: after an
    /// UPDATE_IRQ write, or when KVM reports the line was acknowledged (resample).
    pub fn update_irq_level(&self) {
        if self.irq.msi_enabled() {
            return;
        }
        let pending = self.header_word(RAM_INT_PENDING).load(Ordering::SeqCst);
        let mask = self.header_word(RAM_INT_MASK).load(Ordering::SeqCst);
        if pending & mask != 0 {
            self.deliver();
        }
    }

    /// For testing drivers: the next `count` interrupts are not delivered, as if lost on the
    /// way, though their bits are set in `int_pending` as always.
    pub fn drop_interrupts(&self, count: u64) {
        self.drops_wanted.store(count, Ordering::SeqCst);
    }

    fn deliver(&self) {
        let drop = |n: u64| n.checked_sub(1);
        if self.drops_wanted.load(Ordering::Relaxed) > 0
            && self
                .drops_wanted
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, drop)
                .is_ok()
        {
            self.interrupts_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.interrupts_raised.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.irq.raise() {
            log::debug!("qxl: cannot raise the interrupt: {e}");
        }
    }

    /// Signals the vCPU waiting in synchronous slot `slot`.
    pub fn complete_sync(&self, slot: usize) {
        if let Some(s) = self.sync_slots.get(slot) {
            *s.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            s.cv.notify_one();
        }
    }

    /// Pauses the device with the VM: the display thread stops taking commands from the rings
    /// and holds queued requests (their completions, interrupts included, come after
    /// [`Self::resume`]), except that it still serves a synchronous request, whose vCPU cannot
    /// park before it completes, and everything queued before it. Queries such as screenshots
    /// are still answered, from the last frame.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Undoes [`Self::pause`] and lets the display thread catch up.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.wake();
    }

    /// Whether the device is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        // Only fails if the counter would overflow, and then the thread is awake anyway.
        let _ = self.wake_evt.write(1);
    }

    fn send(&self, request: QxlRequest) -> bool {
        match self.requests.try_send(request) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                self.wake();
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.requests_refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn claim_sync_slot(&self) -> Option<usize> {
        let mut used = self.sync_used.load(Ordering::Acquire);
        loop {
            let free = (!used).trailing_zeros() as usize;
            if free >= SYNC_SLOTS {
                return None;
            }
            let claimed = used | 1 << free;
            match self.sync_used.compare_exchange(
                used,
                claimed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(free),
                Err(now) => used = now,
            }
        }
    }

    fn release_sync_slot(&self, slot: usize) {
        self.sync_used.fetch_and(!(1 << slot), Ordering::AcqRel);
    }

    /// Sends `kind` and waits (this vCPU only, no lock held) until the display thread did it.
    fn send_and_wait(&self, kind: QxlRequestKind) {
        let Some(slot) = self.claim_sync_slot() else {
            self.requests_refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let waiter = &self.sync_slots[slot];
        *waiter.done.lock().unwrap_or_else(|e| e.into_inner()) = false;

        if self.send(QxlRequest {
            kind,
            completion: Completion::Sync(slot),
        }) {
            let done = waiter.done.lock().unwrap_or_else(|e| e.into_inner());
            let (done, timeout) = waiter
                .cv
                .wait_timeout_while(done, SYNC_TIMEOUT, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if timeout.timed_out() && !*done {
                log::warn!("qxl: synchronous {kind:?} not done after {SYNC_TIMEOUT:?}; resuming");
            }
        }
        self.release_sync_slot(slot);
    }

    /// Flags a guest bug: logs it, raises QXL_INTERRUPT_ERROR and ignores further ports but
    /// RESET.
    pub fn guest_bug(&self, what: std::fmt::Arguments<'_>) {
        if !self.guest_bug.swap(true, Ordering::AcqRel) {
            log::warn!("qxl: guest bug: {what}; the device ignores the guest until it resets");
        }
        self.raise_interrupt(QXL_INTERRUPT_ERROR);
    }
}

/// The I/O port BAR (BAR 3).
pub struct QxlIo {
    shared: Arc<QxlShared>,
}

impl QxlIo {
    /// Creates the port handler.
    pub fn new(shared: Arc<QxlShared>) -> Self {
        QxlIo { shared }
    }

    fn handle(&self, port: u64, value: u8) {
        let shared = &self.shared;
        if shared.guest_bug.load(Ordering::Acquire) && port != QXL_IO_RESET {
            return;
        }

        match port {
            QXL_IO_NOTIFY_CMD => notify(shared, &shared.notify_cmd),
            QXL_IO_NOTIFY_CURSOR => notify(shared, &shared.notify_cursor),
            QXL_IO_NOTIFY_OOM => notify(shared, &shared.notify_oom),
            QXL_IO_FLUSH_RELEASE => notify(shared, &shared.flush_release),
            QXL_IO_UPDATE_IRQ => shared.update_irq_level(),
            QXL_IO_LOG => {
                shared.send(QxlRequest {
                    kind: QxlRequestKind::Log,
                    completion: Completion::None,
                });
            }
            QXL_IO_RESET => shared.send_and_wait(QxlRequestKind::Reset),
            QXL_IO_UPDATE_AREA..=QXL_IO_DESTROY_ALL_SURFACES => self.sync_port(port, value),
            QXL_IO_UPDATE_AREA_ASYNC..=QXL_IO_FLUSH_SURFACES_ASYNC
            | QXL_IO_MONITORS_CONFIG_ASYNC => self.async_port(port, value),
            _ => shared.guest_bug(format_args!("write to unsupported port {port}")),
        }
    }

    /// Checks a port's value and turns it into a request kind.
    fn request_kind(&self, port: u64, value: u8) -> Result<QxlRequestKind, &'static str> {
        use QxlRequestKind::*;
        let kind = match port {
            QXL_IO_UPDATE_AREA | QXL_IO_UPDATE_AREA_ASYNC => UpdateArea,
            QXL_IO_MEMSLOT_ADD | QXL_IO_MEMSLOT_ADD_ASYNC => MemslotAdd(value),
            QXL_IO_MEMSLOT_DEL => MemslotDel(value),
            QXL_IO_CREATE_PRIMARY | QXL_IO_CREATE_PRIMARY_ASYNC if value == 0 => CreatePrimary,
            QXL_IO_DESTROY_PRIMARY | QXL_IO_DESTROY_PRIMARY_ASYNC if value == 0 => DestroyPrimary,
            QXL_IO_CREATE_PRIMARY | QXL_IO_CREATE_PRIMARY_ASYNC => return Err("primary id not 0"),
            QXL_IO_DESTROY_PRIMARY | QXL_IO_DESTROY_PRIMARY_ASYNC => {
                return Err("primary id not 0")
            }
            QXL_IO_DESTROY_SURFACE_WAIT | QXL_IO_DESTROY_SURFACE_ASYNC => {
                DestroySurface(u32::from(value))
            }
            QXL_IO_DESTROY_ALL_SURFACES | QXL_IO_DESTROY_ALL_SURFACES_ASYNC => DestroyAllSurfaces,
            QXL_IO_FLUSH_SURFACES_ASYNC => FlushSurfaces,
            QXL_IO_MONITORS_CONFIG_ASYNC => MonitorsConfig,
            _ => return Err("no such request (SET_MODE, ATTACH/DETACH_PRIMARY are not offered)"),
        };
        Ok(kind)
    }

    fn sync_port(&self, port: u64, value: u8) {
        match self.request_kind(port, value) {
            Ok(kind) => self.shared.send_and_wait(kind),
            Err(why) => self
                .shared
                .guest_bug(format_args!("port {port} value {value}: {why}")),
        }
    }

    fn async_port(&self, port: u64, value: u8) {
        let shared = &self.shared;
        let kind = match self.request_kind(port, value) {
            Ok(kind) => kind,
            Err(why) => {
                shared.guest_bug(format_args!("port {port} value {value}: {why}"));
                shared.raise_interrupt(QXL_INTERRUPT_IO_CMD);
                return;
            }
        };

        if shared.async_busy.swap(true, Ordering::AcqRel) {
            shared.guest_bug(format_args!(
                "async port {port} written while another is pending"
            ));
            return;
        }
        if !shared.send(QxlRequest {
            kind,
            completion: Completion::Interrupt,
        }) {
            shared.async_busy.store(false, Ordering::Release);
            shared.raise_interrupt(QXL_INTERRUPT_IO_CMD);
        }
    }
}

fn notify(shared: &QxlShared, flag: &AtomicBool) {
    if !flag.swap(true, Ordering::AcqRel) {
        shared.wake();
    }
}

impl SharedBusDevice for QxlIo {
    fn read(&self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&self, _base: u64, offset: u64, data: &[u8]) {
        let [value] = data else { return };
        if offset >= QXL_IO_RANGE_SIZE {
            self.shared
                .guest_bug(format_args!("write to port {offset} past the last port"));
            return;
        }

        self.handle(offset, *value);
    }

    fn write_done(&self, offset: u64, since_exit: Duration) {
        if let Ok(port) = usize::try_from(offset) {
            if port < PORTS {
                self.shared.stats.record(port, since_exit);
            }
        }
    }
}

/// The ROM BAR (BAR 2): read-only to the guest.
pub struct QxlRom {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl QxlRom {
    /// Serves `bytes`, which the device may update (client fields).
    pub fn new(bytes: Arc<Mutex<Vec<u8>>>) -> Self {
        QxlRom { bytes }
    }
}

impl BusDevice for QxlRom {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match bytes.get(start..start.saturating_add(data.len())) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
}

/// Where the VMM placed the BARs at start.
#[derive(Clone, Copy, Debug)]
pub struct QxlBarAddresses {
    /// BAR 0, the RAM.
    pub ram: u64,
    /// BAR 1, the surface memory.
    pub vram: u64,
    /// BAR 2, the ROM.
    pub rom: u64,
    /// BAR 3, the I/O ports.
    pub io: u64,
}

/// The configuration space of the QXL function.
pub struct QxlPci {
    config: PciConfiguration,
    msi: MsiCapability,
    irq: Arc<PciInterrupt>,
}

impl QxlPci {
    /// Creates the function with BARs of `ram_size` and `vram_size` at `bars`, its INTx pin
    /// routed to `intx_line`.
    pub fn new(
        ram_size: u64,
        vram_size: u64,
        bars: QxlBarAddresses,
        intx_line: u8,
        irq: Arc<PciInterrupt>,
    ) -> Self {
        let mut config =
            PciConfiguration::new(QXL_VENDOR_ID, QXL_DEVICE_ID, QXL_CLASS_CODE, QXL_REVISION);
        config.set_subsystem(0x1af4, 0x1100);
        config.add_bar(
            usize::from(QXL_RAM_BAR),
            BarKind::Memory32,
            ram_size,
            bars.ram,
        );
        config.add_bar(
            usize::from(QXL_VRAM_BAR),
            BarKind::Memory32,
            vram_size,
            bars.vram,
        );
        config.add_bar(
            usize::from(QXL_ROM_BAR),
            BarKind::Memory32,
            QXL_ROM_SIZE,
            bars.rom,
        );
        config.add_bar(
            usize::from(QXL_IO_BAR),
            BarKind::Io,
            QXL_IO_BAR_SIZE,
            bars.io,
        );
        config.set_interrupt(1, intx_line);
        config.set_command(COMMAND_IO | COMMAND_MEMORY);
        let msi = MsiCapability::add_to(&mut config);
        QxlPci { config, msi, irq }
    }
}

impl PciDevice for QxlPci {
    fn read_config_register(&mut self, reg: usize) -> u32 {
        self.config.read_register(reg)
    }

    fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8]) {
        self.config.write_register(reg, offset, data);
        if reg == 1 || self.msi.covers(reg) {
            let message = self.msi.message(&self.config);
            if let Err(e) = self.irq.update(message, self.config.command()) {
                log::warn!("qxl: cannot program the MSI route: {e}");
            }
        }
    }

    fn bar_regions(&self) -> Vec<BarRegion> {
        self.config.bar_regions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::MsiMessage;
    use crate::qxl::testutil::PortFixture;
    use std::time::Instant;

    fn fixture() -> PortFixture {
        PortFixture::new(Arc::new(MmapRegion::new(1 << 20).unwrap()))
    }

    #[test]
    fn notify_ports_set_flags_and_wake_once() {
        let f = fixture();
        f.write(QXL_IO_NOTIFY_CMD, 0);
        f.write(QXL_IO_NOTIFY_CMD, 0);
        f.write(QXL_IO_NOTIFY_CURSOR, 0);
        assert!(f.shared.notify_cmd.load(Ordering::SeqCst));
        assert!(f.shared.notify_cursor.load(Ordering::SeqCst));
        assert_eq!(
            f.shared.wake_evt.read().unwrap(),
            2,
            "one wake per flag that was clear"
        );
        assert!(f.requests.try_recv().is_err(), "notify ports queue nothing");
    }

    #[test]
    fn an_async_port_is_queued_and_a_second_one_while_pending_is_a_guest_bug() {
        let f = fixture();
        f.set_mask(QXL_INTERRUPT_IO_CMD | QXL_INTERRUPT_ERROR);
        f.write(QXL_IO_CREATE_PRIMARY_ASYNC, 0);
        let request = f.requests.try_recv().unwrap();
        assert_eq!(request.kind, QxlRequestKind::CreatePrimary);
        assert_eq!(request.completion, Completion::Interrupt);
        assert_eq!(
            f.pending(),
            0,
            "no interrupt until the display thread completes it"
        );

        f.write(QXL_IO_CREATE_PRIMARY_ASYNC, 0);
        assert!(
            f.requests.try_recv().is_err(),
            "the second request is refused"
        );
        assert!(f.shared.guest_bug.load(Ordering::SeqCst));
        assert_eq!(f.pending(), QXL_INTERRUPT_ERROR);
        assert_eq!(f.intx.read().unwrap(), 1);

        f.write(QXL_IO_NOTIFY_CMD, 0);
        assert!(
            !f.shared.notify_cmd.load(Ordering::SeqCst),
            "ignored until reset"
        );
    }

    #[test]
    fn bad_values_and_unknown_ports_are_guest_bugs() {
        let f = fixture();
        f.write(QXL_IO_DESTROY_PRIMARY_ASYNC, 1);
        assert!(f.shared.guest_bug.load(Ordering::SeqCst));
        assert_eq!(
            f.pending(),
            QXL_INTERRUPT_ERROR | QXL_INTERRUPT_IO_CMD,
            "async still completes"
        );

        let f = fixture();
        f.write(QXL_IO_SET_MODE, 3);
        assert!(f.shared.guest_bug.load(Ordering::SeqCst));

        let f = fixture();
        f.io.write(0x1000 + 31, &[0]);
        assert!(f.shared.guest_bug.load(Ordering::SeqCst));

        let f = fixture();
        f.io.write(0x1000 + QXL_IO_NOTIFY_CMD, &[0, 0]);
        assert!(
            !f.shared.notify_cmd.load(Ordering::SeqCst),
            "only byte writes count"
        );
    }

    #[test]
    fn a_sync_port_waits_for_its_own_completion() {
        let f = fixture();
        let shared = f.shared.clone();
        let worker = std::thread::spawn(move || {
            let request = f.requests.recv().unwrap();
            assert_eq!(request.kind, QxlRequestKind::MemslotAdd(1));
            let Completion::Sync(slot) = request.completion else {
                panic!("not sync")
            };
            std::thread::sleep(Duration::from_millis(50));
            shared.complete_sync(slot);
        });

        let start = Instant::now();
        f.io.write(0x1000 + QXL_IO_MEMSLOT_ADD, &[1]);
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "returned before completion"
        );
        worker.join().unwrap();
        assert_eq!(
            f.shared.sync_used.load(Ordering::SeqCst),
            0,
            "slot released"
        );
    }

    #[test]
    fn interrupts_follow_the_mask_and_update_irq_reasserts_intx() {
        let f = fixture();
        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        assert_eq!(f.pending(), QXL_INTERRUPT_DISPLAY);
        assert!(f.intx.read().is_err(), "masked: no interrupt");

        f.set_mask(QXL_INTERRUPT_DISPLAY);
        f.write(QXL_IO_UPDATE_IRQ, 0);
        assert_eq!(
            f.intx.read().unwrap(),
            1,
            "pending and unmasked: line asserted"
        );

        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        assert!(f.intx.read().is_err(), "already pending: nothing new");

        f.header(RAM_INT_PENDING).store(0, Ordering::SeqCst);
        f.write(QXL_IO_UPDATE_IRQ, 0);
        assert!(f.intx.read().is_err(), "guest cleared it: line stays low");

        enable_msi(&f);
        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        f.write(QXL_IO_UPDATE_IRQ, 0);
        assert!(
            f.intx.read().is_err(),
            "with MSI the INTx line is never used"
        );
    }

    /// Has the guest turn MSI on, as Linux programs it.
    fn enable_msi(f: &PortFixture) {
        let msi = MsiMessage {
            enabled: true,
            masked: false,
            address: 0xfee0_0000,
            data: 0x31,
        };
        f.irq.update(msi, 0).unwrap();
    }

    #[test]
    fn msi_sends_one_message_per_handler_pass() {
        let f = fixture();
        let sent = || f.shared.interrupts_raised.load(Ordering::SeqCst);
        enable_msi(&f);
        f.set_mask(QXL_INTERRUPT_DISPLAY | QXL_INTERRUPT_IO_CMD);

        f.shared.raise_interrupt(QXL_INTERRUPT_IO_CMD);
        assert_eq!(sent(), 1);
        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        assert_eq!(sent(), 1, "the guest has not handled the first message yet");
        f.shared.raise_interrupt(QXL_INTERRUPT_CURSOR);
        assert_eq!(sent(), 1, "masked");

        let taken = f.header(RAM_INT_PENDING).swap(0, Ordering::SeqCst);
        assert_eq!(
            taken,
            QXL_INTERRUPT_IO_CMD | QXL_INTERRUPT_DISPLAY | QXL_INTERRUPT_CURSOR
        );
        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        assert_eq!(sent(), 2, "after the handler's exchange, a new message");

        f.shared.drop_interrupts(1);
        f.header(RAM_INT_PENDING).store(0, Ordering::SeqCst);
        f.shared.raise_interrupt(QXL_INTERRUPT_IO_CMD);
        assert_eq!(sent(), 2, "dropped on purpose");
        assert_eq!(f.shared.interrupts_dropped.load(Ordering::SeqCst), 1);
        assert_eq!(
            f.pending(),
            QXL_INTERRUPT_IO_CMD,
            "the bit is set all the same"
        );
        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        assert_eq!(sent(), 2, "no message while a bit waits for the guest");
        f.header(RAM_INT_PENDING).store(0, Ordering::SeqCst);
        f.shared.raise_interrupt(QXL_INTERRUPT_DISPLAY);
        assert_eq!(sent(), 3, "one drop only");
    }

    #[test]
    fn port_statistics_count_writes() {
        let f = fixture();
        for _ in 0..3 {
            f.write(QXL_IO_NOTIFY_CMD, 0);
        }
        f.write(QXL_IO_UPDATE_IRQ, 0);
        let figures = f.shared.stats.figures();
        assert_eq!(figures.len(), 2);
        assert_eq!((figures[0].port, figures[0].count), (0, 3));
        assert_eq!((figures[1].port, figures[1].count), (3, 1));
        assert!(figures[0].p50_ns > 0 && figures[0].p99_ns >= figures[0].p50_ns);
        assert_eq!(port_name(24), "MONITORS_CONFIG_ASYNC");

        // The time counts from the vCPU's exit, not from the handler's start.
        let exited = Instant::now() - Duration::from_millis(5);
        f.io.write_exit(0x1000 + QXL_IO_UPDATE_IRQ, &[0], Some(exited));
        let irq = &f.shared.stats.figures()[1];
        assert_eq!(irq.count, 2);
        assert!(irq.max_ns >= 5_000_000, "max {} ns", irq.max_ns);
        assert_eq!(port_name(99), "unknown");
    }

    #[test]
    fn percentiles_use_bucket_upper_bounds() {
        let mut buckets = [0u64; 40];
        buckets[10] = 98;
        buckets[20] = 2;
        assert_eq!(percentile(&buckets, 50), 2048);
        assert_eq!(percentile(&buckets, 99), 1 << 21);
        assert_eq!(percentile(&[0; 40], 50), 0);
    }
}
