// SPDX-License-Identifier: Apache-2.0
//! What the guest did wrong: every way a port request or a command can be refused.

use thiserror::Error;

use super::rect::Rect;

/// A request or command from the guest that the device refuses.
///
/// None of these stop the device: the request is dropped, logged (rate-limited) and counted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum QxlGuestError {
    /// A memory slot id outside `slots_start..=slots_end`.
    #[error("memory slot id {0} is not one the guest may use")]
    BadSlotId(u64),
    /// MEMSLOT_ADD on a slot that is already active.
    #[error("memory slot {0} is already active")]
    SlotInUse(u8),
    /// An address names a slot that was never added.
    #[error("memory slot {0} is not active")]
    SlotInactive(u64),
    /// An address carries a generation other than the slot's.
    #[error("address {addr:#x} has generation {got}, slot has {expected}")]
    SlotGeneration {
        /// The QXLPHYSICAL address.
        addr: u64,
        /// Generation in the address.
        got: u64,
        /// Generation of the slot.
        expected: u8,
    },
    /// An object reaches past the end of its memory slot.
    #[error("object at {addr:#x} of {size} bytes lies outside its memory slot")]
    OutsideSlot {
        /// The QXLPHYSICAL address.
        addr: u64,
        /// Object size.
        size: u64,
    },
    /// A memory slot with `mem_start > mem_end`.
    #[error("memory slot start {start:#x} is above its end {end:#x}")]
    SlotStartAfterEnd {
        /// ram.mem_slot.mem_start.
        start: u64,
        /// ram.mem_slot.mem_end.
        end: u64,
    },
    /// A memory slot that is not inside BAR0 or BAR1.
    #[error("memory slot {start:#x}..{end:#x} is not inside the RAM or VRAM BAR")]
    SlotOutsideBars {
        /// ram.mem_slot.mem_start.
        start: u64,
        /// ram.mem_slot.mem_end.
        end: u64,
    },
    /// An access outside a BAR (a bug in the engine's checks, never expected).
    #[error("access of {len} bytes at offset {offset:#x} lies outside the BAR")]
    OutsideBar {
        /// Offset in the BAR.
        offset: u64,
        /// Access size.
        len: u64,
    },
    /// A null QXLPHYSICAL where an object is required.
    #[error("null address for {0}")]
    NullAddress(&'static str),
    /// A ring header whose `num_items` or counters are impossible.
    #[error("{ring} ring header is corrupt: num_items {num_items}, prod {prod}, cons {cons}")]
    BadRingHeader {
        /// Which ring.
        ring: &'static str,
        /// Header num_items.
        num_items: u32,
        /// Header prod.
        prod: u32,
        /// Header cons.
        cons: u32,
    },
    /// An unknown QXLCommand type, or one not allowed on this ring.
    #[error("command type {0} is not valid here")]
    BadCommandType(u32),
    /// A surface id at or above `n_surfaces`.
    #[error("surface id {0} is out of range")]
    SurfaceIdOutOfRange(u32),
    /// A surface id with no surface behind it.
    #[error("surface {0} does not exist")]
    UnknownSurface(u32),
    /// A surface create for an id already in use (or a second primary).
    #[error("surface {0} already exists")]
    SurfaceExists(u32),
    /// A surface with bad or oversized geometry.
    #[error("surface {width}x{height} with stride {stride} is invalid or too large")]
    BadSurface {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Stride in bytes.
        stride: i32,
    },
    /// A surface format the engine does not render.
    #[error("surface format {0} is not supported")]
    UnsupportedFormat(u32),
    /// A rectangle that is inverted, negative or outside its surface.
    #[error("bad rectangle {0:?}")]
    BadRect(Rect),
    /// A chunk whose `next_chunk` points at itself.
    #[error("data chunk at {0:#x} links to itself")]
    ChunkLoop(u64),
    /// A chunk chain longer than the cap.
    #[error("data chunk chain has more than {0} chunks")]
    TooManyChunks(usize),
    /// A chunk chain holding another byte count than its object needs.
    #[error("data chunk chain holds {got} bytes where {expected} are needed")]
    ChunkBytes {
        /// Bytes found (or claimed, when over the limit).
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// More clip rectangles than the cap.
    #[error("{0} clip rectangles is too many")]
    TooManyClipRects(u32),
    /// Clip rectangles that overlap into too many pieces.
    #[error("clip rectangles overlap into too many pieces")]
    ClipTooComplex,
    /// An unknown clip type.
    #[error("clip type {0} is unknown")]
    BadClipType(u32),
    /// An image type the engine does not decode (QUIC, LZ, JPEG...).
    #[error("image type {0} is not supported")]
    UnsupportedImage(u8),
    /// A bitmap format the engine does not decode.
    #[error("bitmap format {0} is not supported")]
    UnsupportedBitmap(u8),
    /// A bitmap with zero or oversized dimensions or a too small stride.
    #[error("bitmap {width}x{height} with stride {stride} is invalid or too large")]
    BadBitmap {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Stride in bytes.
        stride: u32,
    },
    /// A palettised bitmap without a palette.
    #[error("palettised bitmap has no palette")]
    MissingPalette,
    /// A brush type the engine does not paint.
    #[error("brush type {0} is not supported")]
    UnsupportedBrush(u32),
    /// A cursor shape with a bad type, size or data length.
    #[error("cursor shape type {kind} {width}x{height} with {data} data bytes is refused")]
    BadCursor {
        /// Cursor type.
        kind: u16,
        /// Width in pixels.
        width: u16,
        /// Height in pixels.
        height: u16,
        /// Data bytes the shape claims.
        data: u32,
    },
    /// A cursor command type outside SET, MOVE, HIDE and TRAIL.
    #[error("cursor command type {0} is unknown")]
    BadCursorCommand(u8),
    /// A surface command type outside CREATE and DESTROY.
    #[error("surface command type {0} is unknown")]
    BadSurfaceCommand(u8),
    /// A monitors configuration that cannot be read.
    #[error("monitors configuration at {0:#x} is unusable")]
    BadMonitorsConfig(u64),
}
