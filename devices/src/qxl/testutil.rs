// SPDX-License-Identifier: Apache-2.0
//! A fake guest for the engine's tests: it lays out command bodies, images, chunks and clip
//! lists in the BARs the way the Linux 6.1 driver does and reads the results back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use vm_memory::mmap::MmapRegion;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{QxlIo, QxlRequest, QxlShared};

use super::engine::{QxlConfig, QxlEngine};
use super::error::QxlGuestError;
use super::memory::{Bar, GuestBars, GuestPtr};
use super::memslot::{BarWindow, MemSlots};
use super::rect::Rect;
use super::regs::*;
use crate::bus::Bus;
use crate::pci::{MsiRouter, PciInterrupt};

/// Guest-physical address of BAR0.
pub const BAR0: u64 = 0xc000_0000;
/// Guest-physical address of BAR1.
pub const BAR1: u64 = 0xd000_0000;
/// BAR0 size in the tests.
pub const RAM_SIZE: u64 = 4 << 20;
/// BAR1 size in the tests.
pub const VRAM_SIZE: u64 = 4 << 20;
/// Surface0 area (and largest primary) in the tests.
pub const SURFACE0_AREA: u32 = 1 << 20;

/// The test layout.
/// BARs whose RAM BAR (`ram_size` bytes) sits at guest address `base`, with memory slot 1
/// over `[base, base + slot_size)`: what the parsers' own tests need.
pub fn ram_slot(base: u64, ram_size: u64, slot_size: u64) -> (GuestBars, MemSlots) {
    let ram = Arc::new(MmapRegion::new(usize::try_from(ram_size).unwrap()).unwrap());
    let vram = Arc::new(MmapRegion::new(4096).unwrap());
    let mut slots = MemSlots::new(8, 1, 8, 8, 0);
    let window = BarWindow {
        bar: Bar::Ram,
        base,
        size: ram_size,
    };
    slots.add(1, base, base + slot_size, &[window]).unwrap();
    (GuestBars::new(ram, vram), slots)
}

pub fn test_config() -> QxlConfig {
    QxlConfig {
        surface0_area_size: SURFACE0_AREA,
        ..QxlConfig::default()
    }
}

/// Encodes a QXLRect.
pub fn rect_bytes(r: Rect) -> [u8; 16] {
    let mut b = [0u8; 16];
    for (i, v) in [r.top, r.left, r.bottom, r.right].iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// Little-endian bytes of 32-bit pixels.
pub fn pixel_bytes(pixels: &[u32]) -> Vec<u8> {
    pixels.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// A guest with the two BARs, the engine, and a bump allocator in each BAR.
pub struct FakeGuest {
    /// The engine under test.
    pub engine: QxlEngine,
    /// The same memory, for the guest's side.
    pub bars: GuestBars,
    next_ram: u64,
    next_vram: u64,
    next_id: u64,
    /// Release id -> BAR0 offset of its QXLReleaseInfo.
    pub infos: HashMap<u64, u64>,
}

impl FakeGuest {
    /// BARs mapped, nothing else.
    pub fn new() -> Self {
        let ram = Arc::new(MmapRegion::new(usize::try_from(RAM_SIZE).unwrap()).unwrap());
        let vram = Arc::new(MmapRegion::new(usize::try_from(VRAM_SIZE).unwrap()).unwrap());
        let mut engine = QxlEngine::new(ram.clone(), vram.clone(), test_config());
        engine.set_bar_addresses(BAR0, BAR1);
        FakeGuest {
            engine,
            bars: GuestBars::new(ram, vram),
            next_ram: u64::from(SURFACE0_AREA),
            next_vram: 0,
            next_id: 1,
            infos: HashMap::new(),
        }
    }

    /// As the Linux driver leaves it after probe: slot 1 over BAR0 up to the RAM header, slot
    /// 2 over all of BAR1.
    pub fn linux() -> Self {
        let mut g = FakeGuest::new();
        let header = g.engine.ram_header_offset();
        g.add_memslot(1, BAR0, BAR0 + header).unwrap();
        g.add_memslot(2, BAR1, BAR1 + VRAM_SIZE).unwrap();
        g
    }

    /// Writes ram.mem_slot and calls memslot_add.
    pub fn add_memslot(&mut self, id: u8, start: u64, end: u64) -> Result<(), QxlGuestError> {
        self.write_hdr_u64(RAM_MEM_SLOT, start);
        self.write_hdr_u64(RAM_MEM_SLOT + 8, end);
        self.engine.memslot_add(id)
    }

    fn hdr(&self, off: u64) -> GuestPtr {
        GuestPtr::new(Bar::Ram, self.engine.ram_header_offset() + off)
    }

    /// Writes a u32 of the RAM header.
    pub fn write_hdr_u32(&self, off: u64, v: u32) {
        self.bars.write_u32(self.hdr(off), v).unwrap();
    }

    /// Writes a u64 of the RAM header.
    pub fn write_hdr_u64(&self, off: u64, v: u64) {
        self.bars.write_u64(self.hdr(off), v).unwrap();
    }

    /// Reads a u32 of the RAM header.
    pub fn hdr_u32(&self, off: u64) -> u32 {
        self.bars.read_u32(self.hdr(off)).unwrap()
    }

    /// Reads a u64 of the RAM header.
    pub fn hdr_u64(&self, off: u64) -> u64 {
        self.bars.read_u64(self.hdr(off)).unwrap()
    }

    /// QXLPHYSICAL of BAR0 offset `off` through slot 1.
    pub fn slot1(&self, off: u64) -> u64 {
        (1 << 56) | off
    }

    /// QXLPHYSICAL of BAR1 offset `off` through slot 2.
    pub fn slot2(&self, off: u64) -> u64 {
        (2 << 56) | off
    }

    /// Allocates `size` bytes of BAR0 (8-byte aligned) and returns the offset.
    pub fn alloc(&mut self, size: u64) -> u64 {
        let off = self.next_ram;
        self.next_ram = (off + size + 7) & !7;
        assert!(
            self.next_ram <= self.engine.ram_header_offset(),
            "fake guest out of BAR0"
        );
        off
    }

    /// Allocates `size` bytes of BAR1 (4 KiB aligned) and returns the offset.
    pub fn alloc_vram(&mut self, size: u64) -> u64 {
        let off = self.next_vram;
        self.next_vram = (off + size + 4095) & !4095;
        assert!(self.next_vram <= VRAM_SIZE, "fake guest out of BAR1");
        off
    }

    /// Writes `bytes` at BAR0 offset `off`.
    pub fn write_ram(&self, off: u64, bytes: &[u8]) {
        self.bars
            .write(GuestPtr::new(Bar::Ram, off), bytes)
            .unwrap();
    }

    /// Copies `bytes` into fresh BAR0 memory and returns its QXLPHYSICAL.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let off = self.alloc(bytes.len() as u64);
        self.write_ram(off, bytes);
        self.slot1(off)
    }

    /// Writes a command body: a QXLReleaseInfo with a fresh id followed by `rest`.
    pub fn body(&mut self, rest: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut b = id.to_le_bytes().to_vec();
        b.extend_from_slice(rest);
        let addr = self.put(&b);
        self.infos.insert(id, addr & 0xffff_ffff_ffff);
        addr
    }

    /// Produces a ring item like the driver: item at `prod`, then `prod + 1`.
    fn push(&self, ring: u64, kind: u32, data: u64) {
        let prod = self.hdr_u32(ring + RING_PROD);
        let mut item = data.to_le_bytes().to_vec();
        item.extend_from_slice(&kind.to_le_bytes());
        item.extend_from_slice(&[0; 4]);
        let slot = ring + RING_ITEMS + 16 * u64::from(prod & 31);
        self.bars.write(self.hdr(slot), &item).unwrap();
        self.write_hdr_u32(ring + RING_PROD, prod.wrapping_add(1));
    }

    /// Pushes a command-ring item.
    pub fn push_cmd(&self, kind: u32, data: u64) {
        self.push(RAM_CMD_RING, kind, data);
    }

    /// Pushes a cursor-ring item.
    pub fn push_cursor(&self, data: u64) {
        self.push(RAM_CURSOR_RING, QXL_CMD_CURSOR, data);
    }

    /// Allocates BAR1 memory, writes ram.create_surface like Linux (KEEP_DATA, type primary)
    /// and calls create_primary.
    pub fn create_primary(
        &mut self,
        width: u32,
        height: u32,
        stride: i32,
        format: u32,
    ) -> Result<(), QxlGuestError> {
        let size = u64::from(stride.unsigned_abs()) * u64::from(height);
        let mem = self.alloc_vram(size.min(VRAM_SIZE / 2));
        let mut b = Vec::new();
        for v in [
            width,
            height,
            stride as u32,
            format,
            0,
            0,
            QXL_SURF_FLAG_KEEP_DATA,
            0,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.slot2(mem).to_le_bytes());
        self.bars.write(self.hdr(RAM_CREATE_SURFACE), &b).unwrap();
        self.engine.create_primary()
    }

    /// Writes `data` as a chain of `pieces` chunks (the last takes the remainder) and returns
    /// the first chunk's QXLPHYSICAL.
    pub fn chunks(&mut self, data: &[u8], pieces: usize) -> u64 {
        let per = data.len().div_ceil(pieces.max(1)).max(1);
        let parts: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(per).collect()
        };
        let mut next = 0u64;
        for part in parts.iter().rev() {
            next = self.chunk(part, next);
        }
        next
    }

    /// Writes one QXLDataChunk and returns its QXLPHYSICAL.
    pub fn chunk(&mut self, data: &[u8], next: u64) -> u64 {
        let mut b = u32::try_from(data.len()).unwrap().to_le_bytes().to_vec();
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&next.to_le_bytes());
        b.extend_from_slice(data);
        self.put(&b)
    }

    /// Writes a BITMAP QXLImage whose `data` field is `data` and returns its QXLPHYSICAL.
    #[allow(clippy::too_many_arguments)]
    pub fn bitmap_image(
        &mut self,
        format: u8,
        flags: u8,
        width: u32,
        height: u32,
        stride: u32,
        palette: u64,
        data: u64,
    ) -> u64 {
        let mut b = vec![0u8; 8];
        b.push(SPICE_IMAGE_TYPE_BITMAP);
        b.push(0);
        b.extend_from_slice(&width.to_le_bytes());
        b.extend_from_slice(&height.to_le_bytes());
        b.push(format);
        b.push(flags);
        for v in [width, height, stride] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&palette.to_le_bytes());
        b.extend_from_slice(&data.to_le_bytes());
        self.put(&b)
    }

    /// Writes a SURFACE QXLImage.
    pub fn surface_image(&mut self, id: u32) -> u64 {
        let mut b = vec![0u8; 8];
        b.push(SPICE_IMAGE_TYPE_SURFACE);
        b.extend_from_slice(&[0; 9]);
        b.extend_from_slice(&id.to_le_bytes());
        self.put(&b)
    }

    /// Writes a QXLPalette.
    pub fn palette(&mut self, ents: &[u32]) -> u64 {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&u16::try_from(ents.len()).unwrap().to_le_bytes());
        b.extend_from_slice(&pixel_bytes(ents));
        self.put(&b)
    }

    /// Writes a QXLClipRects with one chunk.
    pub fn clip_rects(&mut self, rects: &[Rect]) -> u64 {
        let data: Vec<u8> = rects.iter().flat_map(|r| rect_bytes(*r)).collect();
        let mut b = u32::try_from(rects.len()).unwrap().to_le_bytes().to_vec();
        b.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&data);
        self.put(&b)
    }

    /// Writes a QXLDrawable (release info first) and returns its QXLPHYSICAL; `clip` is the
    /// QXLClipRects address or 0 for no clip; `u` is the union.
    pub fn drawable(
        &mut self,
        surface: u32,
        draw_type: u8,
        bbox: Rect,
        clip: u64,
        u: &[u8],
    ) -> u64 {
        let mut b = vec![0u8; 183];
        b[0..4].copy_from_slice(&surface.to_le_bytes());
        b[4] = 1;
        b[5] = draw_type;
        b[23..39].copy_from_slice(&rect_bytes(bbox));
        let clip_type = if clip == 0 {
            SPICE_CLIP_TYPE_NONE
        } else {
            SPICE_CLIP_TYPE_RECTS
        };
        b[39..43].copy_from_slice(&clip_type.to_le_bytes());
        b[43..51].copy_from_slice(&clip.to_le_bytes());
        for i in 0..3 {
            b[55 + 4 * i..59 + 4 * i].copy_from_slice(&(-1i32).to_le_bytes());
        }
        b[115..115 + u.len()].copy_from_slice(u);
        self.body(&b)
    }

    /// The QXLCopy union: image, src_area, rop, scale_mode 0, no mask.
    pub fn copy_union(image: u64, area: Rect, rop: u16) -> Vec<u8> {
        let mut u = image.to_le_bytes().to_vec();
        u.extend_from_slice(&rect_bytes(area));
        u.extend_from_slice(&rop.to_le_bytes());
        u.extend_from_slice(&[0; 18]);
        u
    }

    /// Draws like Linux's qxl_draw_dirty_fb: DRAW_COPY to surface 0 of a 32BIT TOP_DOWN
    /// bitmap in one chunk with rows `pitch` bytes apart, OP_PUT, RECTS clip. `pixels` holds
    /// the bbox content row by row. Returns the drawable's address (already pushed).
    pub fn linux_draw_copy(
        &mut self,
        bbox: Rect,
        clips: &[Rect],
        pixels: &[u32],
        pitch: u32,
    ) -> u64 {
        let (w, h) = (bbox.width(), bbox.height());
        let mut data = vec![0u8; (pitch * h) as usize];
        for (y, row) in pixels.chunks(w as usize).enumerate() {
            let at = y * pitch as usize;
            data[at..at + row.len() * 4].copy_from_slice(&pixel_bytes(row));
        }
        let chunk = self.chunks(&data, 1);
        let image = self.bitmap_image(
            SPICE_BITMAP_FMT_32BIT,
            QXL_BITMAP_TOP_DOWN,
            w,
            h,
            pitch,
            0,
            chunk,
        );
        let clip = self.clip_rects(clips);
        let area = Rect::new(0, 0, bbox.width() as i32, bbox.height() as i32);
        let u = Self::copy_union(image, area, SPICE_ROPD_OP_PUT);
        let d = self.drawable(0, QXL_DRAW_COPY, bbox, clip, &u);
        self.push_cmd(QXL_CMD_DRAW, d);
        d
    }

    /// Writes a cursor SET command with an ALPHA shape and returns the body address.
    pub fn cursor_set_alpha(&mut self, w: u16, h: u16, pixels: &[u32]) -> u64 {
        let data = pixel_bytes(pixels);
        let shape = self.cursor_shape(SPICE_CURSOR_TYPE_ALPHA, w, h, &data);
        self.cursor_cmd(QXL_CURSOR_SET, 3, 4, shape)
    }

    /// Writes a QXLCursor whose data_size and inline chunk hold `data`.
    pub fn cursor_shape(&mut self, kind: u16, w: u16, h: u16, data: &[u8]) -> u64 {
        let mut b = vec![0u8; 8];
        for v in [kind, w, h, 1, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let len = u32::try_from(data.len()).unwrap();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(data);
        self.put(&b)
    }

    /// Writes a QXLCursorCmd body.
    pub fn cursor_cmd(&mut self, kind: u8, x: i16, y: i16, shape: u64) -> u64 {
        let mut b = vec![kind];
        b.extend_from_slice(&x.to_le_bytes());
        b.extend_from_slice(&y.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&shape.to_le_bytes());
        b.extend_from_slice(&[0; 128]);
        self.body(&b)
    }

    /// Consumes the release ring like Linux's garbage collector and returns the ids.
    pub fn collect_releases(&mut self) -> Vec<u64> {
        let ring = RAM_RELEASE_RING;
        let prod = self.hdr_u32(ring + RING_PROD);
        let mut cons = self.hdr_u32(ring + RING_CONS);
        let mut ids = Vec::new();
        while cons != prod {
            let mut id = self.hdr_u64(ring + RING_ITEMS + 8 * u64::from(cons & 7));
            while id != 0 {
                ids.push(id);
                let info = self.infos[&id];
                id = self.bars.read_u64(GuestPtr::new(Bar::Ram, info)).unwrap();
            }
            cons = cons.wrapping_add(1);
        }
        self.write_hdr_u32(ring + RING_CONS, cons);
        ids
    }

    /// The primary surface as 0x00RRGGBB pixels.
    pub fn screen(&self) -> Vec<u32> {
        let mut out = Vec::new();
        self.engine.read_primary(&mut out).expect("no primary");
        out
    }

    /// Runs the command ring to the end and returns the interrupt bits.
    pub fn run(&mut self) -> u32 {
        self.engine.process_commands(1024).interrupts
    }

    /// Pushes a 2x2 DRAW_COPY of `color` at (x, 0) in the Linux shape.
    pub fn push_small_draw(&mut self, x: i32, color: u32) -> u64 {
        let bbox = Rect::new(x, 0, x + 2, 2);
        self.linux_draw_copy(bbox, &[bbox], &[color; 4], 8)
    }
}

/// Routes no MSI anywhere: for tests that only look at the interrupt state.
struct NoRoute;

impl MsiRouter for NoRoute {
    fn set_msi_route(&self, _address: u64, _data: u32) -> std::io::Result<()> {
        Ok(())
    }
}

/// The device's vCPU side over `ram`: its ports on an I/O bus at 0x1000, written the way a
/// vCPU does, the request queue's receiving end and the INTx line.
pub struct PortFixture {
    /// The I/O bus with the ports.
    pub io: Bus,
    /// The state shared with the display thread.
    pub shared: Arc<QxlShared>,
    /// Requests the ports queued.
    pub requests: Receiver<QxlRequest>,
    /// The INTx line's event.
    pub intx: EventFd,
    /// The interrupt, INTx or MSI.
    pub irq: Arc<PciInterrupt>,
}

impl PortFixture {
    /// Sets the ports up over `ram`, the RAM BAR.
    pub fn new(ram: Arc<MmapRegion<()>>) -> Self {
        let intx = EventFd::new(EFD_NONBLOCK).unwrap();
        let msi = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Arc::new(PciInterrupt::new(
            msi,
            intx.try_clone().unwrap(),
            Box::new(NoRoute),
        ));
        let (shared, requests) = QxlShared::new(ram, irq.clone()).unwrap();
        let io = Bus::new();
        let ports = Arc::new(QxlIo::new(shared.clone()));
        io.insert_shared(ports, 0x1000, QXL_IO_BAR_SIZE).unwrap();
        PortFixture {
            io,
            shared,
            requests,
            intx,
            irq,
        }
    }

    /// Writes `value` to port `port` as a vCPU exit would.
    pub fn write(&self, port: u64, value: u8) {
        let exited = Instant::now();
        assert!(self.io.write_exit(0x1000 + port, &[value], Some(exited)));
    }

    /// A word of the RAM header.
    pub fn header(&self, offset: u64) -> &AtomicU32 {
        self.shared.header_word(offset)
    }

    /// Sets the interrupt mask.
    pub fn set_mask(&self, mask: u32) {
        self.header(RAM_INT_MASK).store(mask, Ordering::SeqCst);
    }

    /// The pending interrupt bits.
    pub fn pending(&self) -> u32 {
        self.header(RAM_INT_PENDING).load(Ordering::SeqCst)
    }
}
