// SPDX-License-Identifier: Apache-2.0
//! [`QxlEngine`]: everything the QXL device does with guest memory, as a library.
//!
//! The engine owns no thread and no interrupt line. The device shell calls it from its port
//! handlers and display worker and raises the interrupt bits it returns. Guest memory is read
//! through checked translations only; every bad request or command is refused, logged
//! (rate-limited) and counted, and nothing the guest writes can make the engine panic, loop
//! or allocate more than fixed caps.

use std::sync::Arc;

use vm_memory::mmap::MmapRegion;

use super::cursor::CursorState;
use super::error::QxlGuestError;
use super::memory::{le_i32, le_u32, le_u64, Bar, GuestBars, GuestPtr};
use super::memslot::{BarWindow, MemSlots};
use super::monitors::{read_monitors_config, MonitorsConfig};
use super::rect::{Damage, Rect, RECT_SIZE};
use super::regs::*;
use super::release::ReleaseList;
use super::render::Renderer;
use super::ring::Ring;
use super::surface::{Surface, SurfaceInfo, Surfaces};
use crate::log_limit::LogLimiter;

pub use super::config::{QxlConfig, QxlConfigError};

mod execute;

/// Most commands an UPDATE_AREA or NOTIFY_OOM drains before it stops, so a guest that keeps
/// producing cannot hold the caller forever.
pub const DRAIN_BUDGET: usize = 4096;
/// Bytes of QXLSurfaceCreate.
const SURFACE_CREATE_SIZE: usize = 40;

/// The result of a pass over a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingProgress {
    /// Items taken from the ring.
    pub processed: usize,
    /// QXL_INTERRUPT_* bits the device must raise.
    pub interrupts: u32,
    /// The budget ran out with items left: call again.
    pub more: bool,
}

/// Counters of what the engine did, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QxlEngineStats {
    /// Items taken from the command ring.
    pub commands: u64,
    /// Items taken from the cursor ring.
    pub cursor_commands: u64,
    /// Drawables by QXL_DRAW_* type.
    pub drawables: [u64; QXL_DRAW_TYPES],
    /// Drawables (or brushes) the engine does not render.
    pub unsupported_drawables: u64,
    /// Drawables rendered without their mask.
    pub masks_ignored: u64,
    /// Rows copied by plain memmove (the Linux DRAW_COPY path).
    pub raw_copy_rows: u64,
    /// Requests and commands refused.
    pub guest_errors: u64,
    /// Corrupt ring headers seen.
    pub ring_errors: u64,
    /// Command buffers returned to the guest.
    pub releases: u64,
    /// Surfaces created (primary and off-screen).
    pub surfaces_created: u64,
    /// Surfaces destroyed.
    pub surfaces_destroyed: u64,
    /// Hard resets.
    pub resets: u64,
}

/// The QXL device's guest-memory engine. See the module documentation.
pub struct QxlEngine {
    bars: GuestBars,
    config: QxlConfig,
    header: GuestPtr,
    bar_addresses: Option<(u64, u64)>,
    slots: MemSlots,
    surfaces: Surfaces,
    cmd_ring: Ring,
    cursor_ring: Ring,
    release: ReleaseList,
    cursor: CursorState,
    renderer: Renderer,
    damage: Damage,
    stats: QxlEngineStats,
    pending_interrupts: u32,
    limiter: LogLimiter,
}

impl QxlEngine {
    /// Creates the engine over BAR0 (`ram`) and BAR1 (`vram`) and puts the RAM header in its
    /// power-on state.
    ///
    /// # Panics
    ///
    /// If `config` does not fit the BARs (a host configuration error); [`QxlEngine::try_new`]
    /// reports it instead.
    pub fn new(ram: Arc<MmapRegion<()>>, vram: Arc<MmapRegion<()>>, config: QxlConfig) -> Self {
        match Self::try_new(ram, vram, config) {
            Ok(engine) => engine,
            Err(e) => panic!("invalid QXL configuration: {e}"),
        }
    }

    /// Creates the engine, checking `config` against the BAR sizes first.
    pub fn try_new(
        ram: Arc<MmapRegion<()>>,
        vram: Arc<MmapRegion<()>>,
        config: QxlConfig,
    ) -> Result<Self, QxlConfigError> {
        let bars = GuestBars::new(ram, vram);
        let ram_size = bars.size(Bar::Ram);
        config.validate(ram_size)?;

        let header_offset = ram_header_offset(ram_size).unwrap_or(0);
        let header = GuestPtr::new(Bar::Ram, header_offset);
        let ring_at = |offset| GuestPtr::new(Bar::Ram, header_offset + offset);
        let ring = |name, offset, items, size| Ring::new(name, ring_at(offset), items, size);
        let release = ring(
            "release",
            RAM_RELEASE_RING,
            RELEASE_RING_SIZE,
            RELEASE_RING_ITEM_SIZE,
        );

        let mut engine = QxlEngine {
            bars,
            config,
            header,
            bar_addresses: None,
            slots: Self::new_slots(&config),
            surfaces: Surfaces::new(config.n_surfaces),
            cmd_ring: ring("command", RAM_CMD_RING, CMD_RING_SIZE, CMD_RING_ITEM_SIZE),
            cursor_ring: ring("cursor", RAM_CURSOR_RING, CMD_RING_SIZE, CMD_RING_ITEM_SIZE),
            release: ReleaseList::new(release),
            cursor: CursorState::default(),
            renderer: Renderer::default(),
            damage: Damage::default(),
            stats: QxlEngineStats::default(),
            pending_interrupts: 0,
            limiter: LogLimiter::new("qxl"),
        };
        engine.reset();
        engine.stats.resets = 0;
        Ok(engine)
    }

    fn new_slots(config: &QxlConfig) -> MemSlots {
        MemSlots::new(
            config.num_memslots,
            config.slots_start,
            config.slot_id_bits,
            config.slot_gen_bits,
            QXL_SLOT_GENERATION,
        )
    }

    /// The layout in use.
    pub fn config(&self) -> &QxlConfig {
        &self.config
    }

    /// BAR0 offset of the RAM header.
    pub fn ram_header_offset(&self) -> u64 {
        self.header.offset
    }

    /// Records where BAR0 and BAR1 currently sit in guest-physical space; memory slots added
    /// afterwards must lie inside one of them.
    pub fn set_bar_addresses(&mut self, bar0: u64, bar1: u64) {
        self.bar_addresses = Some((bar0, bar1));
    }

    /// Power-on state: RAM header re-initialised (magic, int_pending 0, int_mask 0, rings
    /// initialised, release accumulator 0, update_surface 0, monitors_config 0), memslots,
    /// surfaces, cursor and release bookkeeping cleared. Held CREATE commands are not released
    /// (the guest starts over), as in QEMU.
    pub fn reset(&mut self) {
        if let Err(e) = self.init_ram_header() {
            log::error!("qxl: cannot initialise the RAM header: {e}");
        }
        self.slots.clear();
        self.surfaces.clear();
        self.cursor = CursorState {
            serial: self.cursor.serial + 1,
            ..CursorState::default()
        };
        self.damage.clear();
        self.pending_interrupts = 0;
        self.stats.resets += 1;
    }

    fn init_ram_header(&mut self) -> Result<(), QxlGuestError> {
        let field = |offset| GuestPtr::new(Bar::Ram, self.header.offset + offset);
        self.bars.write_u32(field(RAM_MAGIC), QXL_RAM_MAGIC)?;
        self.bars.store_u32(field(RAM_INT_PENDING), 0)?;
        self.bars.store_u32(field(RAM_INT_MASK), 0)?;
        self.cmd_ring.init(&self.bars)?;
        self.cursor_ring.init(&self.bars)?;
        self.release.reset(&self.bars)?;
        self.bars.write_u32(field(RAM_UPDATE_SURFACE), 0)?;
        self.bars.write_u64(field(RAM_MONITORS_CONFIG), 0)
    }

    fn ram_field(&self, offset: u64) -> GuestPtr {
        GuestPtr::new(Bar::Ram, self.header.offset + offset)
    }

    /// Counts and logs (rate-limited) a refused request or command and hands the error back.
    fn guest_error(&mut self, e: QxlGuestError) -> QxlGuestError {
        self.stats.guest_errors += 1;
        self.limiter.warn(format_args!("guest error: {e}"));
        e
    }

    /// QXL_IO_MEMSLOT_ADD: adds slot `slot_id` from `ram.mem_slot`.
    pub fn memslot_add(&mut self, slot_id: u8) -> Result<(), QxlGuestError> {
        let mut b = [0u8; 16];
        self.bars.read(self.ram_field(RAM_MEM_SLOT), &mut b)?;
        let (start, end) = (le_u64(&b, 0), le_u64(&b, 8));

        let windows: Vec<BarWindow> = self
            .bar_addresses
            .map(|(bar0, bar1)| {
                vec![
                    BarWindow {
                        bar: Bar::Ram,
                        base: bar0,
                        size: self.bars.size(Bar::Ram),
                    },
                    BarWindow {
                        bar: Bar::Vram,
                        base: bar1,
                        size: self.bars.size(Bar::Vram),
                    },
                ]
            })
            .unwrap_or_default();
        let result = self.slots.add(slot_id, start, end, &windows);
        result.map_err(|e| self.guest_error(e))
    }

    /// QXL_IO_MEMSLOT_DEL: deletes slot `slot_id`.
    pub fn memslot_del(&mut self, slot_id: u8) -> Result<(), QxlGuestError> {
        let result = self.slots.del(slot_id);
        result.map_err(|e| self.guest_error(e))
    }

    /// QXL_IO_CREATE_PRIMARY: creates surface 0 from `ram.create_surface`. The surface must be
    /// 32-bit, at most `surface0_area_size` bytes and inside a memory slot.
    pub fn create_primary(&mut self) -> Result<(), QxlGuestError> {
        let result = self.try_create_primary();
        result.map_err(|e| self.guest_error(e))
    }

    fn try_create_primary(&mut self) -> Result<(), QxlGuestError> {
        let mut b = [0u8; SURFACE_CREATE_SIZE];
        self.bars.read(self.ram_field(RAM_CREATE_SURFACE), &mut b)?;
        let info = SurfaceInfo {
            width: le_u32(&b, 0),
            height: le_u32(&b, 4),
            stride: le_i32(&b, 8),
            format: le_u32(&b, 12),
        };
        let (flags, mem) = (le_u32(&b, 24), le_u64(&b, 32));

        if self.surfaces.is_used(0)? {
            return Err(QxlGuestError::SurfaceExists(0));
        }
        let bytes = info.validate(u64::from(self.config.surface0_area_size))?;
        let surface = Surface::new(info, self.slots.translate(mem, bytes)?, None);
        if flags & QXL_SURF_FLAG_KEEP_DATA == 0 {
            surface.clear(&self.bars)?;
        }
        self.surfaces.insert(0, surface)?;

        self.stats.surfaces_created += 1;
        self.damage.clear();
        self.damage.add(info.bounds());
        log::info!(
            "qxl: primary surface {}x{} stride {}",
            info.width,
            info.height,
            info.stride
        );
        Ok(())
    }

    /// QXL_IO_DESTROY_PRIMARY: destroys surface 0 and resets the cursor; nothing happens
    /// without a primary.
    pub fn destroy_primary(&mut self) {
        if self.surfaces.remove(0).is_ok() {
            self.stats.surfaces_destroyed += 1;
            self.damage.clear();
            self.reset_cursor();
        }
    }

    fn reset_cursor(&mut self) {
        self.cursor = CursorState {
            serial: self.cursor.serial + 1,
            ..CursorState::default()
        };
    }

    /// QXL_IO_DESTROY_SURFACE_WAIT: rendering is synchronous, so there is never pending work
    /// to finish; only the id is checked. (The id itself is freed by QXL_CMD_SURFACE DESTROY.)
    pub fn destroy_surface(&mut self, id: u32) -> Result<(), QxlGuestError> {
        if id >= self.config.n_surfaces {
            return Err(self.guest_error(QxlGuestError::SurfaceIdOutOfRange(id)));
        }
        Ok(())
    }

    /// QXL_IO_DESTROY_ALL_SURFACES: destroys every surface (the primary too), releases the
    /// held CREATE commands and resets the cursor. Interrupt bits from the releases are kept
    /// for [`QxlEngine::take_interrupts`].
    pub fn destroy_all_surfaces(&mut self) {
        let held = self.surfaces.clear();
        for token in held {
            self.stats.surfaces_destroyed += 1;
            let bits = self.release(token);
            self.pending_interrupts |= bits;
        }
        self.flush_pending();
        self.damage.clear();
        self.reset_cursor();
    }

    /// QXL_IO_UPDATE_AREA: drains the command ring (at most [`DRAIN_BUDGET`] commands), then
    /// makes sure `ram.update_area` of `ram.update_surface` is rendered in the surface memory,
    /// which it always is since rendering is synchronous. An empty rectangle is accepted; an
    /// id at or above `n_surfaces`, a missing surface, or an inverted, negative or oversized
    /// rectangle is refused. Interrupt bits from the drain are kept for
    /// [`QxlEngine::take_interrupts`].
    pub fn update_area(&mut self) -> Result<(), QxlGuestError> {
        let progress = self.process_commands(DRAIN_BUDGET);
        self.pending_interrupts |= progress.interrupts;

        let result = self.check_update_area();
        result.map_err(|e| self.guest_error(e))
    }

    fn check_update_area(&self) -> Result<(), QxlGuestError> {
        let id = self.bars.read_u32(self.ram_field(RAM_UPDATE_SURFACE))?;
        let mut b = [0u8; RECT_SIZE];
        self.bars.read(self.ram_field(RAM_UPDATE_AREA), &mut b)?;
        let rect = Rect::from_le_bytes(&b);

        let surface = self.surfaces.get(id)?;
        if rect.left == rect.right || rect.top == rect.bottom {
            return Ok(());
        }
        let inside = rect.is_ordered() && rect.left >= 0 && rect.top >= 0;
        if !inside || !surface.bounds().contains(&rect) {
            return Err(QxlGuestError::BadRect(rect));
        }
        Ok(())
    }

    /// Interrupt bits produced by calls that do not return them (update_area,
    /// destroy_all_surfaces). process_commands, process_cursor_commands, flush_release and
    /// oom include these in their result too; call this after the others.
    pub fn take_interrupts(&mut self) -> u32 {
        std::mem::take(&mut self.pending_interrupts)
    }

    /// Whether released commands wait for room on the release ring: the display thread
    /// retries [`Self::flush_release`] until they are pushed, since the guest says nothing
    /// when it consumes the ring.
    pub fn releases_held(&self) -> bool {
        self.release.pending() > 0
    }

    /// QXL_IO_FLUSH_RELEASE: pushes the release list now. Returns interrupt bits.
    pub fn flush_release(&mut self) -> u32 {
        self.flush_pending();
        self.take_interrupts()
    }

    /// QXL_IO_NOTIFY_OOM: nothing while the guest still has release entries to consume;
    /// otherwise drains the command ring (at most [`DRAIN_BUDGET`] commands) and pushes every
    /// release. Returns interrupt bits.
    pub fn oom(&mut self) -> u32 {
        match self.release.ring_is_empty(&self.bars) {
            Ok(true) => {}
            Ok(false) => return self.take_interrupts(),
            Err(e) => return self.ring_error(e) | self.take_interrupts(),
        }

        let progress = self.process_commands(DRAIN_BUDGET);
        progress.interrupts | self.flush_release()
    }

    /// QXL_IO_MONITORS_CONFIG_ASYNC: reads the guest's head layout at `ram.monitors_config`.
    /// Count 0 becomes one head covering the primary; counts above `max_allowed`, 64 or the
    /// configured maximum are clamped; heads with a value above 8192 are dropped.
    pub fn monitors_config(&mut self) -> Result<MonitorsConfig, QxlGuestError> {
        let result = self
            .bars
            .read_u64(self.ram_field(RAM_MONITORS_CONFIG))
            .and_then(|addr| {
                let limit = self.config.max_monitors;
                read_monitors_config(&self.bars, &self.slots, addr, limit, self.primary())
            });
        match result {
            Ok(config) => {
                if config.dropped > 0 {
                    let n = config.dropped;
                    self.limiter
                        .warn(format_args!("monitors config: {n} heads dropped"));
                }
                Ok(config)
            }
            Err(e) => Err(self.guest_error(e)),
        }
    }

    /// The primary surface's geometry, if one exists.
    pub fn primary(&self) -> Option<SurfaceInfo> {
        self.surfaces.get(0).ok().map(|s| s.info)
    }

    /// Copies the primary surface into `out` as top-down 0x00RRGGBB pixels (for screendumps
    /// and SPICE). Returns its geometry, or `None` (and leaves `out` empty) without a primary.
    pub fn read_primary(&self, out: &mut Vec<u32>) -> Option<SurfaceInfo> {
        let info = self.primary()?;
        self.read_primary_rect(Rect::new(0, 0, i32::MAX, i32::MAX), out)?;
        Some(info)
    }

    /// Copies `rect` of the primary surface, clipped to it, into `out` row by row as
    /// 0x00RRGGBB pixels. Returns the clipped rectangle, or `None` (and leaves `out` empty)
    /// without a primary or when nothing of `rect` lies on it.
    pub fn read_primary_rect(&self, rect: Rect, out: &mut Vec<u32>) -> Option<Rect> {
        out.clear();
        let surface = self.surfaces.get(0).ok()?;
        let area = rect.intersect(&surface.bounds())?;
        let (left, top) = (area.left.unsigned_abs(), area.top.unsigned_abs());

        let mut row = vec![0u8; area.width() as usize * 4];
        out.reserve(area.width() as usize * area.height() as usize);
        for y in top..top + area.height() {
            if self
                .bars
                .read(surface.pixel_ptr(left, y), &mut row)
                .is_err()
            {
                out.clear();
                return None;
            }
            let pixels = row.chunks_exact(4).map(|p| le_u32(p, 0) & 0x00ff_ffff);
            out.extend(pixels);
        }
        Some(area)
    }

    /// The cursor as the guest last set it.
    pub fn cursor(&self) -> &CursorState {
        &self.cursor
    }

    /// Moves the rectangles of surface 0 changed since the last call to `out` (coalesced, at
    /// most 64).
    pub fn take_damage(&mut self, out: &mut Vec<Rect>) {
        self.damage.take(out);
    }

    /// Counters of what the engine did.
    pub fn stats(&self) -> &QxlEngineStats {
        &self.stats
    }

    /// Live surface `id`, for tests.
    #[cfg(test)]
    pub(crate) fn surface(&self, id: u32) -> Option<&Surface> {
        self.surfaces.get(id).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qxl::testutil::*;

    #[test]
    fn default_layout_matches_qemu() {
        let ram = Arc::new(MmapRegion::new(64 << 20).unwrap());
        let vram = Arc::new(MmapRegion::new(4096).unwrap());
        let engine = QxlEngine::new(ram, vram, QxlConfig::default());

        assert_eq!(engine.ram_header_offset(), 0x03ff_e000);
        assert_eq!(
            num_pages(64 << 20, QXL_DEFAULT_SURFACE0_AREA_SIZE),
            Some(12286)
        );
    }

    #[test]
    fn reset_returns_to_power_on_state() {
        let mut g = FakeGuest::linux();
        g.create_primary(64, 48, 256, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        let set = g.cursor_set_alpha(8, 8, &[0xff11_2233; 64]);
        g.push_cursor(set);
        g.engine.process_cursor_commands(16);
        g.push_cmd(QXL_CMD_NOP, 0);
        for (off, v) in [
            (RAM_INT_PENDING, 5),
            (RAM_INT_MASK, 0x27),
            (RAM_UPDATE_SURFACE, 9),
        ] {
            g.write_hdr_u32(off, v);
        }
        g.write_hdr_u64(RAM_MONITORS_CONFIG, 0x1234);
        g.write_hdr_u32(RAM_MAGIC, 0);

        g.engine.reset();

        for (off, want) in [
            (RAM_MAGIC, QXL_RAM_MAGIC),
            (RAM_INT_PENDING, 0),
            (RAM_INT_MASK, 0),
            (RAM_UPDATE_SURFACE, 0),
        ] {
            assert_eq!(g.hdr_u32(off), want, "field at {off}");
        }
        assert_eq!(g.hdr_u64(RAM_MONITORS_CONFIG), 0);
        for ring in [RAM_CMD_RING, RAM_CURSOR_RING] {
            let fields: Vec<u32> = (0..5).map(|i| g.hdr_u32(ring + 4 * i)).collect();
            assert_eq!(fields, [32, 0, 1, 0, 0]);
        }
        let fields: Vec<u32> = (0..5)
            .map(|i| g.hdr_u32(RAM_RELEASE_RING + 4 * i))
            .collect();
        assert_eq!(fields, [8, 0, 1, 0, 0]);
        assert_eq!(g.hdr_u64(RAM_RELEASE_RING + 20), 0);

        assert!(g.engine.primary().is_none());
        assert!(g.engine.cursor().shape.is_none());
        assert!(!g.engine.cursor().visible);
        let addr = g.slot1(0x1000);
        assert_eq!(
            g.engine.slots.translate(addr, 1),
            Err(QxlGuestError::SlotInactive(1))
        );
        assert_eq!(g.engine.process_commands(8).processed, 0);
    }

    #[test]
    fn memslots_translate_over_both_bars() {
        let mut g = FakeGuest::linux();
        g.create_primary(16, 16, 64, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        let header = g.engine.ram_header_offset();

        assert_eq!(
            g.engine.slots.translate(g.slot1(header - 8), 8),
            Ok(GuestPtr::new(Bar::Ram, header - 8))
        );
        assert!(g.engine.slots.translate(g.slot1(header - 8), 9).is_err());
        assert_eq!(
            g.engine.slots.translate(g.slot2(VRAM_SIZE - 4), 4),
            Ok(GuestPtr::new(Bar::Vram, VRAM_SIZE - 4))
        );
        let wrong_generation = g.slot1(0x1000) | 1 << 48;
        assert!(matches!(
            g.engine.slots.translate(wrong_generation, 1),
            Err(QxlGuestError::SlotGeneration { .. })
        ));
    }

    #[test]
    fn bad_memslot_requests_are_refused() {
        let mut g = FakeGuest::linux();

        for id in [0, 8, 200] {
            assert_eq!(
                g.add_memslot(id, BAR0, BAR0 + 4096),
                Err(QxlGuestError::BadSlotId(u64::from(id)))
            );
        }
        assert_eq!(
            g.add_memslot(1, BAR0, BAR0 + 4096),
            Err(QxlGuestError::SlotInUse(1))
        );
        assert!(matches!(
            g.add_memslot(3, BAR0 + 8, BAR0),
            Err(QxlGuestError::SlotStartAfterEnd { .. })
        ));
        assert!(matches!(
            g.add_memslot(3, BAR0, BAR0 + RAM_SIZE + 1),
            Err(QxlGuestError::SlotOutsideBars { .. })
        ));
        assert!(matches!(
            g.add_memslot(3, BAR1 + VRAM_SIZE, BAR1 + VRAM_SIZE + 4096),
            Err(QxlGuestError::SlotOutsideBars { .. })
        ));
        assert_eq!(g.engine.stats().guest_errors, 7);

        g.add_memslot(3, BAR1 + 4096, BAR1 + 8192).unwrap();
        g.engine.memslot_del(3).unwrap();
        g.add_memslot(3, BAR0, BAR0 + RAM_SIZE).unwrap();
        assert_eq!(g.engine.memslot_del(8), Err(QxlGuestError::BadSlotId(8)));

        let mut fresh = FakeGuest::new();
        fresh.engine.bar_addresses = None;
        assert!(matches!(
            fresh.add_memslot(1, BAR0, BAR0 + 4096),
            Err(QxlGuestError::SlotOutsideBars { .. })
        ));
    }

    #[test]
    fn primary_with_both_stride_signs() {
        for stride in [64, -64, 80, -80] {
            let mut g = FakeGuest::linux();
            g.create_primary(16, 8, stride, SPICE_SURFACE_FMT_32_XRGB)
                .unwrap();
            let info = g.engine.primary().unwrap();
            assert_eq!((info.width, info.height, info.stride), (16, 8, stride));

            let bbox = Rect::new(0, 0, 16, 8);
            let pixels: Vec<u32> = (0..128).collect();
            g.linux_draw_copy(bbox, &[bbox], &pixels, 64);
            g.run();
            assert_eq!(g.screen(), pixels, "stride {stride}");

            let mem = g.engine.surfaces.get(0).unwrap().pixel_ptr(0, 0);
            let first_in_memory = g.bars.read_u32(mem).unwrap();
            assert_eq!(
                first_in_memory, 0,
                "stride {stride}: row 0 lies at the top row"
            );
        }
    }

    #[test]
    fn bad_primaries_are_refused() {
        let mut g = FakeGuest::linux();
        let xrgb = SPICE_SURFACE_FMT_32_XRGB;
        let too_big = 512 * 4 * 513;
        for (w, h, stride, format) in [
            (0, 8, 64, xrgb),
            (16, 0, 64, xrgb),
            (8193, 1, 8193 * 4, xrgb),
            (16, 8, 60, xrgb),
            (16, 8, 66, xrgb),
            (512, 513, 2048, xrgb),
            (16, 8, 64, SPICE_SURFACE_FMT_16_565),
            (16, 8, 64, 7),
            (1, too_big / 4, 4, xrgb),
        ] {
            assert!(
                g.create_primary(w, h, stride, format).is_err(),
                "{w}x{h} {stride}"
            );
            assert!(g.engine.primary().is_none());
        }

        let mut b = [0u8; 40];
        for (i, v) in [16u32, 16, 64, xrgb, 0, 0, 1, 0].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[32..40].copy_from_slice(&g.slot2(VRAM_SIZE - 1000).to_le_bytes());
        g.bars
            .write(g.engine.ram_field(RAM_CREATE_SURFACE), &b)
            .unwrap();
        assert!(matches!(
            g.engine.create_primary(),
            Err(QxlGuestError::OutsideSlot { .. })
        ));

        g.create_primary(16, 8, 64, xrgb).unwrap();
        assert_eq!(
            g.create_primary(16, 8, 64, xrgb),
            Err(QxlGuestError::SurfaceExists(0))
        );
        g.engine.destroy_primary();
        g.engine.destroy_primary();
        g.create_primary(32, 8, 128, SPICE_SURFACE_FMT_32_ARGB)
            .unwrap();
        assert_eq!(g.engine.primary().unwrap().width, 32);
    }

    #[test]
    fn primary_without_keep_data_is_cleared() {
        let mut g = FakeGuest::linux();
        g.bars
            .fill(GuestPtr::new(Bar::Vram, 0), 4096, 0xee)
            .unwrap();
        let mut b = [0u8; 40];
        for (i, v) in [4u32, 4, 16, SPICE_SURFACE_FMT_32_XRGB].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[32..40].copy_from_slice(&g.slot2(0).to_le_bytes());
        g.bars
            .write(g.engine.ram_field(RAM_CREATE_SURFACE), &b)
            .unwrap();

        g.engine.create_primary().unwrap();

        assert_eq!(g.screen(), [0; 16]);
        assert_eq!(
            g.bars.read_u32(GuestPtr::new(Bar::Vram, 64)).unwrap(),
            0xeeee_eeee
        );
    }

    #[test]
    fn oom_waits_for_the_guest_then_drains() {
        let mut g = FakeGuest::linux();
        g.create_primary(16, 4, 64, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        g.push_small_draw(0, 0xff);
        g.run();
        g.push_small_draw(0, 0x1);

        g.engine.oom();
        assert_eq!(
            g.engine.stats().commands,
            1,
            "release ring not consumed yet"
        );

        assert_eq!(g.collect_releases(), [1]);
        g.engine.oom();
        assert_eq!(g.engine.stats().commands, 2);
        assert_eq!(g.collect_releases(), [2]);
        assert_eq!(g.screen()[0], 0x1);
    }

    /// Revision 6: each batch's releases go back at its end; only a full release ring holds
    /// them, and the next flush after the guest consumed the ring pushes them and raises
    /// the interrupt the guest asked for.
    #[test]
    fn releases_go_back_per_batch_and_wait_only_for_ring_room() {
        let mut g = FakeGuest::linux();
        g.create_primary(16, 4, 64, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        for i in 0..7 {
            g.push_small_draw(0, i);
            g.run();
            assert!(!g.engine.releases_held(), "batch {i} went back at once");
        }
        g.push_small_draw(0, 7);
        g.run();
        assert!(g.engine.releases_held(), "the eighth list waits for room");
        assert_eq!(g.engine.flush_release(), 0, "still no room");

        assert_eq!(g.collect_releases(), (1..=7).collect::<Vec<u64>>());
        let cons = g.hdr_u32(RAM_RELEASE_RING + RING_CONS);
        g.write_hdr_u32(RAM_RELEASE_RING + RING_NOTIFY_ON_PROD, cons + 1);
        assert_eq!(g.engine.flush_release(), QXL_INTERRUPT_DISPLAY);
        assert!(!g.engine.releases_held());
        assert_eq!(g.collect_releases(), [8]);
    }

    #[test]
    fn update_area_refuses_bad_requests_and_recovers() {
        let mut g = FakeGuest::linux();
        g.create_primary(16, 8, 64, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        let request = |g: &mut FakeGuest, id: u32, r: Rect| {
            g.write_hdr_u32(RAM_UPDATE_SURFACE, id);
            g.bars
                .write(g.engine.ram_field(RAM_UPDATE_AREA), &rect_bytes(r))
                .unwrap();
            g.engine.update_area()
        };
        let full = Rect::new(0, 0, 16, 8);

        assert_eq!(
            request(&mut g, 1024, full),
            Err(QxlGuestError::SurfaceIdOutOfRange(1024))
        );
        assert_eq!(
            request(&mut g, 5000, full),
            Err(QxlGuestError::SurfaceIdOutOfRange(5000))
        );
        assert_eq!(
            request(&mut g, 7, full),
            Err(QxlGuestError::UnknownSurface(7))
        );
        for r in [
            Rect::new(10, 0, 2, 8),
            Rect::new(0, 0, 65535, 8),
            Rect::new(-1, 0, 4, 4),
            Rect::new(0, 6, 4, 2),
        ] {
            assert_eq!(request(&mut g, 0, r), Err(QxlGuestError::BadRect(r)));
        }
        assert_eq!(request(&mut g, 0, Rect::new(3, 3, 3, 9)), Ok(()));

        g.push_small_draw(4, 0xabcdef);
        assert_eq!(request(&mut g, 0, full), Ok(()));
        assert_eq!(
            g.screen()[4],
            0xabcdef,
            "update_area drains the command ring"
        );
        assert_eq!(g.collect_releases(), [1]);
        assert_eq!(g.engine.take_interrupts() & QXL_INTERRUPT_ERROR, 0);
    }

    #[test]
    fn monitors_config_rules() {
        let mut g = FakeGuest::linux();
        assert!(g.engine.monitors_config().is_err());
        g.create_primary(64, 32, 256, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();

        let config = g.put(&[0, 0, 4, 0]);
        g.write_hdr_u64(RAM_MONITORS_CONFIG, config);
        let heads = g.engine.monitors_config().unwrap().heads;
        assert_eq!(heads.len(), 1);
        assert_eq!((heads[0].width, heads[0].height), (64, 32));

        let mut b = vec![65, 0, 1, 0];
        for i in 0..65u32 {
            for v in [i, 0, 100 + i, 50, 0, 0, 0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let config = g.put(&b);
        g.write_hdr_u64(RAM_MONITORS_CONFIG, config);
        let got = g.engine.monitors_config().unwrap();
        assert_eq!(got.heads.len(), 1);
        assert_eq!(got.heads[0].width, 100);
    }

    #[test]
    fn damage_reports_what_changed_on_the_primary() {
        let mut g = FakeGuest::linux();
        g.create_primary(16, 8, 64, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        let mut out = Vec::new();
        g.engine.take_damage(&mut out);
        assert_eq!(out, [Rect::new(0, 0, 16, 8)]);

        let bbox = Rect::new(2, 1, 10, 5);
        let clips = [Rect::new(2, 1, 4, 2), Rect::new(8, 4, 10, 5)];
        g.linux_draw_copy(bbox, &clips, &[7; 32], 32);
        g.run();
        out.clear();
        g.engine.take_damage(&mut out);
        assert_eq!(out, [Rect::new(2, 1, 10, 5)]);
        out.clear();
        g.engine.take_damage(&mut out);
        assert!(out.is_empty());
    }
}
