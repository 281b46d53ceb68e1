// SPDX-License-Identifier: Apache-2.0
//! QXL constants: PCI identity, ROM and RAM-header layouts, ring geometry, ports, interrupt
//! bits and the protocol enums the engine parses.
//!
//! Values come from spice-protocol 0.14.3 (`spice/qxl_dev.h`, `spice/enums.h`) and QEMU's
//! `hw/display/qxl.c`; offsets are those of the packed structures (see the QXL fact sheet,
//! sections 3 to 10). Every multi-byte field is little-endian and may be unaligned.

/// Red Hat's PCI vendor ID (`REDHAT_PCI_VENDOR_ID`).
pub const QXL_VENDOR_ID: u16 = 0x1b36;
/// `QXL_DEVICE_ID_STABLE`.
pub const QXL_DEVICE_ID: u16 = 0x0100;
/// PCI revision. Revision 5 is QEMU's default (`QXL_REVISION_STABLE_V12 + 1`); 6 adds a
/// promise that drivers may rely on, and that the stock Linux driver (which checks only for
/// revision 4 or later) ignores: every consumed command goes back to the release ring at the
/// end of the batch that consumed it, never held for a batch of 32 or for NOTIFY_OOM, and
/// QXL_INTERRUPT_DISPLAY is raised when the push reaches `notify_on_prod`. A driver can wait
/// for a release on the interrupt alone (guest-drivers/qxl/patches).
pub const QXL_REVISION: u8 = 6;
/// Class code of the secondary `qxl` device: display controller, other.
pub const QXL_CLASS_CODE: u32 = 0x03_80_00;

/// BAR0: command/resource memory with the surface0 area at its start and the RAM header at
/// its end.
pub const QXL_RAM_BAR: u8 = 0;
/// BAR1: surface memory.
pub const QXL_VRAM_BAR: u8 = 1;
/// BAR2: the read-only ROM.
pub const QXL_ROM_BAR: u8 = 2;
/// BAR3: the I/O ports.
pub const QXL_IO_BAR: u8 = 3;
/// Size of the I/O BAR for revisions 4 and 5 (next power of two of `QXL_IO_RANGE_SIZE`).
pub const QXL_IO_BAR_SIZE: u64 = 32;
/// Number of defined I/O ports (`QXL_IO_RANGE_SIZE`).
pub const QXL_IO_RANGE_SIZE: u64 = 25;

/// Default size of BAR0 (QEMU `ram_size`).
pub const QXL_DEFAULT_RAM_SIZE: u64 = 64 << 20;
/// Default size of BAR1 (QEMU `vram_size`).
pub const QXL_DEFAULT_VRAM_SIZE: u64 = 64 << 20;
/// Default size of the surface0 area at BAR0 offset 0 (QEMU `vgamem_mb` = 16).
pub const QXL_DEFAULT_SURFACE0_AREA_SIZE: u32 = 16 << 20;
/// Size of BAR2: `sizeof(QXLRom)` + mode list rounded up to a page.
pub const QXL_ROM_SIZE: u64 = 8192;
/// Guest pages are 4 KiB; the ROM reports `num_pages` in this unit.
pub const QXL_PAGE_SIZE: u64 = 4096;

/// Number of surface ids (ROM `n_surfaces`, QEMU property `surfaces`).
pub const QXL_NUM_SURFACES: u32 = 1024;
/// Number of memory slots (`NUM_MEMSLOTS` in QEMU's spice-display.h).
pub const QXL_NUM_MEMSLOTS: u8 = 8;
/// First slot id the guest may use (ROM `slots_start`); QEMU keeps slot 0 for itself.
pub const QXL_SLOTS_START: u8 = 1;
/// Last slot id the guest may use (ROM `slots_end`).
pub const QXL_SLOTS_END: u8 = QXL_NUM_MEMSLOTS - 1;
/// Bits of a QXLPHYSICAL that hold the slot generation (ROM `slot_gen_bits`).
pub const QXL_SLOT_GEN_BITS: u8 = 8;
/// Bits of a QXLPHYSICAL that hold the slot id (ROM `slot_id_bits`).
pub const QXL_SLOT_ID_BITS: u8 = 8;
/// Generation of every slot (ROM `slot_generation`); QEMU never changes it.
pub const QXL_SLOT_GENERATION: u8 = 0;

/// "QXRO": `QXLRom.magic`.
pub const QXL_ROM_MAGIC: u32 = 0x4f52_5851;
/// "QXRA": `QXLRam.magic`.
pub const QXL_RAM_MAGIC: u32 = 0x4152_5851;

/// `sizeof(QXLRom)`; the mode list starts here (`modes_offset`).
pub const ROM_STRUCT_SIZE: u32 = 1160;
/// `QXLRom.magic`.
pub const ROM_MAGIC: usize = 0;
/// `QXLRom.id`.
pub const ROM_ID: usize = 4;
/// `QXLRom.update_id`.
pub const ROM_UPDATE_ID: usize = 8;
/// `QXLRom.compression_level`.
pub const ROM_COMPRESSION_LEVEL: usize = 12;
/// `QXLRom.log_level`.
pub const ROM_LOG_LEVEL: usize = 16;
/// `QXLRom.mode`.
pub const ROM_MODE: usize = 20;
/// `QXLRom.modes_offset`.
pub const ROM_MODES_OFFSET: usize = 24;
/// `QXLRom.num_pages`.
pub const ROM_NUM_PAGES: usize = 28;
/// `QXLRom.pages_offset`.
pub const ROM_PAGES_OFFSET: usize = 32;
/// `QXLRom.draw_area_offset`.
pub const ROM_DRAW_AREA_OFFSET: usize = 36;
/// `QXLRom.surface0_area_size`.
pub const ROM_SURFACE0_AREA_SIZE: usize = 40;
/// `QXLRom.ram_header_offset`.
pub const ROM_RAM_HEADER_OFFSET: usize = 44;
/// `QXLRom.mm_clock`.
pub const ROM_MM_CLOCK: usize = 48;
/// `QXLRom.n_surfaces`.
pub const ROM_N_SURFACES: usize = 52;
/// `QXLRom.flags` (u64).
pub const ROM_FLAGS: usize = 56;
/// `QXLRom.slots_start` (u8).
pub const ROM_SLOTS_START: usize = 64;
/// `QXLRom.slots_end` (u8).
pub const ROM_SLOTS_END: usize = 65;
/// `QXLRom.slot_gen_bits` (u8).
pub const ROM_SLOT_GEN_BITS: usize = 66;
/// `QXLRom.slot_id_bits` (u8).
pub const ROM_SLOT_ID_BITS: usize = 67;
/// `QXLRom.slot_generation` (u8).
pub const ROM_SLOT_GENERATION: usize = 68;
/// `QXLRom.client_present` (u8).
pub const ROM_CLIENT_PRESENT: usize = 69;
/// `QXLRom.client_capabilities` (58 bytes).
pub const ROM_CLIENT_CAPABILITIES: usize = 70;
/// `QXLRom.client_monitors_config_crc`.
pub const ROM_CLIENT_MONITORS_CONFIG_CRC: usize = 128;
/// `QXLRom.client_monitors_config` (u16 count, u16 pad, 64 x QXLURect).
pub const ROM_CLIENT_MONITORS_CONFIG: usize = 132;

/// Bytes reserved for the RAM header at the end of BAR0: `sizeof(QXLRam)` rounded to 4 KiB.
pub const QXL_RAM_HEADER_SIZE: u64 = 8192;
/// `sizeof(QXLRam)` in spice-protocol.
pub const RAM_STRUCT_SIZE: u64 = 5348;
/// `QXLRam.magic`.
pub const RAM_MAGIC: u64 = 0;
/// `QXLRam.int_pending`: interrupt bits raised by the device, cleared by the guest.
pub const RAM_INT_PENDING: u64 = 4;
/// `QXLRam.int_mask`: interrupt bits the guest wants.
pub const RAM_INT_MASK: u64 = 8;
/// `QXLRam.log_buf` (4096 bytes).
pub const RAM_LOG_BUF: u64 = 12;
/// `QXLRam.cmd_ring`.
pub const RAM_CMD_RING: u64 = 4108;
/// `QXLRam.cursor_ring`.
pub const RAM_CURSOR_RING: u64 = 4640;
/// `QXLRam.release_ring`.
pub const RAM_RELEASE_RING: u64 = 5172;
/// `QXLRam.update_area` (QXLRect).
pub const RAM_UPDATE_AREA: u64 = 5256;
/// `QXLRam.update_surface` (u32).
pub const RAM_UPDATE_SURFACE: u64 = 5272;
/// `QXLRam.mem_slot` (u64 mem_start, u64 mem_end).
pub const RAM_MEM_SLOT: u64 = 5276;
/// `QXLRam.create_surface` (QXLSurfaceCreate).
pub const RAM_CREATE_SURFACE: u64 = 5292;
/// `QXLRam.flags` (u64, unused).
pub const RAM_FLAGS: u64 = 5332;
/// `QXLRam.monitors_config` (QXLPHYSICAL of a QXLMonitorsConfig).
pub const RAM_MONITORS_CONFIG: u64 = 5340;

/// Ring header field: number of item slots (a power of two).
pub const RING_NUM_ITEMS: u64 = 0;
/// Ring header field: free-running producer counter.
pub const RING_PROD: u64 = 4;
/// Ring header field: the producer notifies when `prod` reaches this value.
pub const RING_NOTIFY_ON_PROD: u64 = 8;
/// Ring header field: free-running consumer counter.
pub const RING_CONS: u64 = 12;
/// Ring header field: the consumer notifies when `cons` reaches this value.
pub const RING_NOTIFY_ON_CONS: u64 = 16;
/// Offset of the first item after the ring header.
pub const RING_ITEMS: u64 = 20;
/// Items of the command and cursor rings.
pub const CMD_RING_SIZE: u32 = 32;
/// Bytes of one command-ring or cursor-ring item (QXLCommand).
pub const CMD_RING_ITEM_SIZE: u64 = 16;
/// Items of the release ring.
pub const RELEASE_RING_SIZE: u32 = 8;
/// Bytes of one release-ring item (u64 id).
pub const RELEASE_RING_ITEM_SIZE: u64 = 8;

/// Returns the BAR0 offset of the RAM header: the last [`QXL_RAM_HEADER_SIZE`] bytes.
pub fn ram_header_offset(ram_size: u64) -> Option<u64> {
    ram_size.checked_sub(QXL_RAM_HEADER_SIZE)
}

/// Returns ROM `num_pages`: the 4 KiB pages between the surface0 area and the RAM header.
pub fn num_pages(ram_size: u64, surface0_area_size: u32) -> Option<u64> {
    let header = ram_header_offset(ram_size)?;
    let pages = header.checked_sub(u64::from(surface0_area_size))?;
    Some(pages / QXL_PAGE_SIZE)
}

/// Port 0: the guest produced commands.
pub const QXL_IO_NOTIFY_CMD: u64 = 0;
/// Port 1: the guest produced cursor commands.
pub const QXL_IO_NOTIFY_CURSOR: u64 = 1;
/// Port 2: render `update_area` of `update_surface`.
pub const QXL_IO_UPDATE_AREA: u64 = 2;
/// Port 3: re-evaluate the interrupt line.
pub const QXL_IO_UPDATE_IRQ: u64 = 3;
/// Port 4: the guest is short of memory; free and flush releases.
pub const QXL_IO_NOTIFY_OOM: u64 = 4;
/// Port 5: hard reset.
pub const QXL_IO_RESET: u64 = 5;
/// Port 6: legacy mode set.
pub const QXL_IO_SET_MODE: u64 = 6;
/// Port 7: print `log_buf`.
pub const QXL_IO_LOG: u64 = 7;
/// Port 8: add the memory slot described by `ram.mem_slot`.
pub const QXL_IO_MEMSLOT_ADD: u64 = 8;
/// Port 9: delete a memory slot.
pub const QXL_IO_MEMSLOT_DEL: u64 = 9;
/// Port 10: not implemented by QEMU.
pub const QXL_IO_DETACH_PRIMARY: u64 = 10;
/// Port 11: not implemented by QEMU.
pub const QXL_IO_ATTACH_PRIMARY: u64 = 11;
/// Port 12: create surface 0 from `ram.create_surface`.
pub const QXL_IO_CREATE_PRIMARY: u64 = 12;
/// Port 13: destroy surface 0.
pub const QXL_IO_DESTROY_PRIMARY: u64 = 13;
/// Port 14: finish pending work on a surface.
pub const QXL_IO_DESTROY_SURFACE_WAIT: u64 = 14;
/// Port 15: destroy every surface.
pub const QXL_IO_DESTROY_ALL_SURFACES: u64 = 15;
/// Port 16: asynchronous [`QXL_IO_UPDATE_AREA`].
pub const QXL_IO_UPDATE_AREA_ASYNC: u64 = 16;
/// Port 17: asynchronous [`QXL_IO_MEMSLOT_ADD`].
pub const QXL_IO_MEMSLOT_ADD_ASYNC: u64 = 17;
/// Port 18: asynchronous [`QXL_IO_CREATE_PRIMARY`].
pub const QXL_IO_CREATE_PRIMARY_ASYNC: u64 = 18;
/// Port 19: asynchronous [`QXL_IO_DESTROY_PRIMARY`].
pub const QXL_IO_DESTROY_PRIMARY_ASYNC: u64 = 19;
/// Port 20: asynchronous [`QXL_IO_DESTROY_SURFACE_WAIT`].
pub const QXL_IO_DESTROY_SURFACE_ASYNC: u64 = 20;
/// Port 21: asynchronous [`QXL_IO_DESTROY_ALL_SURFACES`].
pub const QXL_IO_DESTROY_ALL_SURFACES_ASYNC: u64 = 21;
/// Port 22: drain commands and render every surface.
pub const QXL_IO_FLUSH_SURFACES_ASYNC: u64 = 22;
/// Port 23: push the pending release list now.
pub const QXL_IO_FLUSH_RELEASE: u64 = 23;
/// Port 24: the guest changed `ram.monitors_config`.
pub const QXL_IO_MONITORS_CONFIG_ASYNC: u64 = 24;

/// Interrupt: display work (command ring space, release ring entries).
pub const QXL_INTERRUPT_DISPLAY: u32 = 1 << 0;
/// Interrupt: cursor ring space.
pub const QXL_INTERRUPT_CURSOR: u32 = 1 << 1;
/// Interrupt: an asynchronous port operation completed.
pub const QXL_INTERRUPT_IO_CMD: u32 = 1 << 2;
/// Interrupt: the device flagged a guest bug.
pub const QXL_INTERRUPT_ERROR: u32 = 1 << 3;
/// Interrupt: `client_present` or `client_capabilities` changed.
pub const QXL_INTERRUPT_CLIENT: u32 = 1 << 4;
/// Interrupt: `client_monitors_config` changed.
pub const QXL_INTERRUPT_CLIENT_MONITORS_CONFIG: u32 = 1 << 5;

/// QXLCommand.type: no operation.
pub const QXL_CMD_NOP: u32 = 0;
/// QXLCommand.type: QXLDrawable.
pub const QXL_CMD_DRAW: u32 = 1;
/// QXLCommand.type: QXLUpdateCmd (deprecated).
pub const QXL_CMD_UPDATE: u32 = 2;
/// QXLCommand.type: QXLCursorCmd (cursor ring only).
pub const QXL_CMD_CURSOR: u32 = 3;
/// QXLCommand.type: QXLMessage.
pub const QXL_CMD_MESSAGE: u32 = 4;
/// QXLCommand.type: QXLSurfaceCmd.
pub const QXL_CMD_SURFACE: u32 = 5;

/// Draw type: nothing.
pub const QXL_DRAW_NOP: u8 = 0;
/// Draw type: fill with a brush.
pub const QXL_DRAW_FILL: u8 = 1;
/// Draw type: copy with a brush behind.
pub const QXL_DRAW_OPAQUE: u8 = 2;
/// Draw type: copy an image.
pub const QXL_DRAW_COPY: u8 = 3;
/// Draw type: move pixels inside the destination surface.
pub const QXL_DRAW_COPY_BITS: u8 = 4;
/// Draw type: blend an image with a raster operation.
pub const QXL_DRAW_BLEND: u8 = 5;
/// Draw type: paint black.
pub const QXL_DRAW_BLACKNESS: u8 = 6;
/// Draw type: paint white.
pub const QXL_DRAW_WHITENESS: u8 = 7;
/// Draw type: invert the destination.
pub const QXL_DRAW_INVERS: u8 = 8;
/// Draw type: ternary raster operation.
pub const QXL_DRAW_ROP3: u8 = 9;
/// Draw type: path stroke.
pub const QXL_DRAW_STROKE: u8 = 10;
/// Draw type: glyph string.
pub const QXL_DRAW_TEXT: u8 = 11;
/// Draw type: copy with a transparent colour.
pub const QXL_DRAW_TRANSPARENT: u8 = 12;
/// Draw type: alpha blend.
pub const QXL_DRAW_ALPHA_BLEND: u8 = 13;
/// Draw type: Render composite.
pub const QXL_DRAW_COMPOSITE: u8 = 14;
/// Number of draw types (for per-type counters).
pub const QXL_DRAW_TYPES: usize = 15;

/// ROP descriptor: invert the source first.
pub const SPICE_ROPD_INVERS_SRC: u16 = 1 << 0;
/// ROP descriptor: invert the brush first.
pub const SPICE_ROPD_INVERS_BRUSH: u16 = 1 << 1;
/// ROP descriptor: invert the destination first.
pub const SPICE_ROPD_INVERS_DEST: u16 = 1 << 2;
/// ROP descriptor: result = source.
pub const SPICE_ROPD_OP_PUT: u16 = 1 << 3;
/// ROP descriptor: result = source | destination.
pub const SPICE_ROPD_OP_OR: u16 = 1 << 4;
/// ROP descriptor: result = source & destination.
pub const SPICE_ROPD_OP_AND: u16 = 1 << 5;
/// ROP descriptor: result = source ^ destination.
pub const SPICE_ROPD_OP_XOR: u16 = 1 << 6;
/// ROP descriptor: result = black.
pub const SPICE_ROPD_OP_BLACKNESS: u16 = 1 << 7;
/// ROP descriptor: result = white.
pub const SPICE_ROPD_OP_WHITENESS: u16 = 1 << 8;
/// ROP descriptor: result = inverted destination.
pub const SPICE_ROPD_OP_INVERS: u16 = 1 << 9;
/// ROP descriptor: invert the result.
pub const SPICE_ROPD_INVERS_RES: u16 = 1 << 10;

/// Clip type: only the bounding box.
pub const SPICE_CLIP_TYPE_NONE: u32 = 0;
/// Clip type: a QXLClipRects list.
pub const SPICE_CLIP_TYPE_RECTS: u32 = 1;

/// Brush type: none.
pub const SPICE_BRUSH_TYPE_NONE: u32 = 0;
/// Brush type: one colour.
pub const SPICE_BRUSH_TYPE_SOLID: u32 = 1;
/// Brush type: an image pattern.
pub const SPICE_BRUSH_TYPE_PATTERN: u32 = 2;

/// QXLImage type: an uncompressed bitmap.
pub const SPICE_IMAGE_TYPE_BITMAP: u8 = 0;
/// QXLImage type: QUIC-compressed data.
pub const SPICE_IMAGE_TYPE_QUIC: u8 = 1;
/// QXLImage type: the content of another surface.
pub const SPICE_IMAGE_TYPE_SURFACE: u8 = 104;

/// Bitmap format: 1 bit per pixel, least significant bit first, palette.
pub const SPICE_BITMAP_FMT_1BIT_LE: u8 = 1;
/// Bitmap format: 1 bit per pixel, most significant bit first, palette.
pub const SPICE_BITMAP_FMT_1BIT_BE: u8 = 2;
/// Bitmap format: 4 bits per pixel, low nibble first, palette.
pub const SPICE_BITMAP_FMT_4BIT_LE: u8 = 3;
/// Bitmap format: 4 bits per pixel, high nibble first, palette.
pub const SPICE_BITMAP_FMT_4BIT_BE: u8 = 4;
/// Bitmap format: 8 bits per pixel, palette.
pub const SPICE_BITMAP_FMT_8BIT: u8 = 5;
/// Bitmap format: 16 bits per pixel, x555.
pub const SPICE_BITMAP_FMT_16BIT: u8 = 6;
/// Bitmap format: 24 bits per pixel, bytes B, G, R.
pub const SPICE_BITMAP_FMT_24BIT: u8 = 7;
/// Bitmap format: 32 bits per pixel, bytes B, G, R, unused.
pub const SPICE_BITMAP_FMT_32BIT: u8 = 8;
/// Bitmap format: 32 bits per pixel, bytes B, G, R, A.
pub const SPICE_BITMAP_FMT_RGBA: u8 = 9;
/// Bitmap format: 8-bit alpha only.
pub const SPICE_BITMAP_FMT_8BIT_A: u8 = 10;

/// Bitmap flag: `data` points at the pixels, not at a chunk chain.
pub const QXL_BITMAP_DIRECT: u8 = 1 << 0;
/// Bitmap flag: the guest may change the pixels later.
pub const QXL_BITMAP_UNSTABLE: u8 = 1 << 1;
/// Bitmap flag: row 0 is the top row.
pub const QXL_BITMAP_TOP_DOWN: u8 = 1 << 2;

/// Surface format: 1-bit alpha.
pub const SPICE_SURFACE_FMT_1_A: u32 = 1;
/// Surface format: 8-bit alpha.
pub const SPICE_SURFACE_FMT_8_A: u32 = 8;
/// Surface format: 16-bit x555.
pub const SPICE_SURFACE_FMT_16_555: u32 = 16;
/// Surface format: 16-bit 565.
pub const SPICE_SURFACE_FMT_16_565: u32 = 80;
/// Surface format: 32-bit 0xXXRRGGBB.
pub const SPICE_SURFACE_FMT_32_XRGB: u32 = 32;
/// Surface format: 32-bit 0xAARRGGBB.
pub const SPICE_SURFACE_FMT_32_ARGB: u32 = 96;

/// QXLSurfaceCreate / QXLSurfaceCmd flag: keep the memory content.
pub const QXL_SURF_FLAG_KEEP_DATA: u32 = 1;
/// QXLSurfaceCmd type: create.
pub const QXL_SURFACE_CMD_CREATE: u8 = 0;
/// QXLSurfaceCmd type: destroy.
pub const QXL_SURFACE_CMD_DESTROY: u8 = 1;

/// QXLCursorCmd type: new shape and position.
pub const QXL_CURSOR_SET: u8 = 0;
/// QXLCursorCmd type: new position.
pub const QXL_CURSOR_MOVE: u8 = 1;
/// QXLCursorCmd type: hide the cursor.
pub const QXL_CURSOR_HIDE: u8 = 2;
/// QXLCursorCmd type: mouse trails.
pub const QXL_CURSOR_TRAIL: u8 = 3;

/// Cursor shape type: 32-bit ARGB.
pub const SPICE_CURSOR_TYPE_ALPHA: u16 = 0;
/// Cursor shape type: AND mask followed by XOR mask, 1 bit per pixel each.
pub const SPICE_CURSOR_TYPE_MONO: u16 = 1;
