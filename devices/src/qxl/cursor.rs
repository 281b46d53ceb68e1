// SPDX-License-Identifier: Apache-2.0
//! The hardware cursor: shapes from QXL_CURSOR_SET (ALPHA and MONO), position and visibility.
//!
//! A shape is checked against hard caps before anything is allocated: at most
//! [`MAX_CURSOR_DIM`] pixels a side, and its chunk chain must hold exactly the bytes the
//! QXLCursor claims, which must cover the pixels. A refused SET leaves the cursor as it was.

use std::sync::Arc;

use super::chunk::walk_chunks;
use super::command::CursorCmd;
use super::error::QxlGuestError;
use super::memory::{le_u16, le_u32, GuestBars};
use super::memslot::MemSlots;
use super::regs::{SPICE_CURSOR_TYPE_ALPHA, SPICE_CURSOR_TYPE_MONO};

/// Largest cursor width or height accepted.
pub const MAX_CURSOR_DIM: u16 = 512;
/// Most shape bytes accepted: a 512 x 512 ARGB cursor.
const MAX_CURSOR_BYTES: u64 = 512 * 512 * 4;
/// Bytes of QXLCursorHeader plus `data_size`; the first QXLDataChunk follows.
const CURSOR_HEADER_LEN: usize = 22;
const CURSOR_HEADER_SIZE: u64 = CURSOR_HEADER_LEN as u64;

/// A cursor image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorShape {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hotspot column.
    pub hot_x: u16,
    /// Hotspot row.
    pub hot_y: u16,
    /// `width * height` pixels, top row first, as 0xAARRGGBB (straight alpha, as Linux
    /// passes it through from the DRM ARGB8888 cursor plane).
    pub pixels: Vec<u32>,
}

/// What the guest set up for the cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorState {
    /// The current shape, if one was ever set.
    pub shape: Option<Arc<CursorShape>>,
    /// Hotspot position in primary-surface pixels.
    pub x: i32,
    /// Hotspot position in primary-surface pixels.
    pub y: i32,
    /// Whether the cursor shows.
    pub visible: bool,
    /// Incremented on every change, so consumers can tell when to resend.
    pub serial: u64,
}

impl CursorState {
    /// Applies a cursor command; on error nothing changes.
    pub fn apply(
        &mut self,
        bars: &GuestBars,
        slots: &MemSlots,
        cmd: CursorCmd,
    ) -> Result<(), QxlGuestError> {
        match cmd {
            CursorCmd::Set {
                x,
                y,
                visible,
                shape,
            } => {
                let shape = read_shape(bars, slots, shape)?;
                self.shape = Some(Arc::new(shape));
                (self.x, self.y, self.visible) = (x.into(), y.into(), visible);
            }
            CursorCmd::Move { x, y } => (self.x, self.y, self.visible) = (x.into(), y.into(), true),
            CursorCmd::Hide => self.visible = false,
            CursorCmd::Trail => return Ok(()),
        }
        self.serial += 1;
        Ok(())
    }
}

/// Reads and decodes the QXLCursor at `addr`.
fn read_shape(bars: &GuestBars, slots: &MemSlots, addr: u64) -> Result<CursorShape, QxlGuestError> {
    if addr == 0 {
        return Err(QxlGuestError::NullAddress("cursor shape"));
    }
    let mut h = [0u8; CURSOR_HEADER_LEN];
    bars.read(slots.translate(addr, CURSOR_HEADER_SIZE)?, &mut h)?;
    let (kind, width, height) = (le_u16(&h, 8), le_u16(&h, 10), le_u16(&h, 12));
    let data_size = le_u32(&h, 18);

    let bad = QxlGuestError::BadCursor {
        kind,
        width,
        height,
        data: data_size,
    };
    let dims_ok = (1..=MAX_CURSOR_DIM).contains(&width) && (1..=MAX_CURSOR_DIM).contains(&height);
    let needed = match kind {
        SPICE_CURSOR_TYPE_ALPHA => u64::from(width) * u64::from(height) * 4,
        SPICE_CURSOR_TYPE_MONO => 2 * u64::from(width).div_ceil(8) * u64::from(height),
        _ => return Err(bad),
    };
    let size = u64::from(data_size);
    if !dims_ok || size < needed || size > MAX_CURSOR_BYTES {
        return Err(bad);
    }

    let chunk = addr.checked_add(CURSOR_HEADER_SIZE).ok_or(bad)?;
    let stream = walk_chunks(bars, slots, chunk, size)?;
    let mut data = vec![0u8; usize::try_from(needed).unwrap_or(0)];
    stream.read(bars, 0, &mut data)?;

    let pixels = match kind {
        SPICE_CURSOR_TYPE_ALPHA => data.chunks_exact(4).map(|p| le_u32(p, 0)).collect(),
        _ => decode_mono(&data, width, height),
    };
    Ok(CursorShape {
        width,
        height,
        hot_x: le_u16(&h, 14),
        hot_y: le_u16(&h, 16),
        pixels,
    })
}

/// Decodes an AND mask followed by an XOR mask (1 bit per pixel, MSB first): AND 1 XOR 0 is
/// transparent, AND 0 gives black or white, AND 1 XOR 1 (screen inversion) shows as black.
fn decode_mono(data: &[u8], width: u16, height: u16) -> Vec<u32> {
    let pitch = usize::from(width).div_ceil(8);
    let (and_mask, xor_mask) = data.split_at(pitch * usize::from(height));
    let bit = |mask: &[u8], x: usize, y: usize| mask[y * pitch + x / 8] >> (7 - x % 8) & 1;

    let mut pixels = Vec::with_capacity(usize::from(width) * usize::from(height));
    for y in 0..usize::from(height) {
        for x in 0..usize::from(width) {
            pixels.push(match (bit(and_mask, x, y), bit(xor_mask, x, y)) {
                (1, 0) => 0,
                (0, 1) => 0xffff_ffff,
                _ => 0xff00_0000,
            });
        }
    }
    pixels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qxl::memory::{Bar, GuestPtr};

    const BASE: u64 = 0x8000_0000;
    const SIZE: u64 = 2 << 20;

    fn setup() -> (GuestBars, MemSlots) {
        crate::qxl::testutil::ram_slot(BASE, SIZE, SIZE)
    }

    /// Writes a QXLCursor with one inline chunk of `data` at offset 0x1000.
    fn shape(bars: &GuestBars, slots: &MemSlots, kind: u16, w: u16, h: u16, data: &[u8]) -> u64 {
        let mut b = vec![0u8; 8];
        for v in [kind, w, h, 1, 2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let len = u32::try_from(data.len()).unwrap();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(data);
        bars.write(GuestPtr::new(Bar::Ram, 0x1000), &b).unwrap();
        slots.address(1, 0x1000)
    }

    fn set(shape: u64) -> CursorCmd {
        CursorCmd::Set {
            x: 10,
            y: 20,
            visible: true,
            shape,
        }
    }

    #[test]
    fn alpha_cursor_is_decoded() {
        let (bars, slots) = setup();
        let data: Vec<u8> = (0u32..4)
            .flat_map(|i| (0x8000_0000 | i).to_le_bytes())
            .collect();
        let addr = shape(&bars, &slots, SPICE_CURSOR_TYPE_ALPHA, 2, 2, &data);
        let mut state = CursorState::default();

        state.apply(&bars, &slots, set(addr)).unwrap();

        let s = state.shape.as_ref().unwrap();
        assert_eq!((s.width, s.height, s.hot_x, s.hot_y), (2, 2, 1, 2));
        assert_eq!(
            s.pixels,
            [0x8000_0000, 0x8000_0001, 0x8000_0002, 0x8000_0003]
        );
        assert_eq!(
            (state.x, state.y, state.visible, state.serial),
            (10, 20, true, 1)
        );
    }

    #[test]
    fn mono_cursor_is_decoded() {
        let (bars, slots) = setup();
        let data = [0b1000_0000, 0b0100_0000, 0b1100_0000, 0b0000_0000];
        let addr = shape(&bars, &slots, SPICE_CURSOR_TYPE_MONO, 2, 2, &data);
        let mut state = CursorState::default();

        state.apply(&bars, &slots, set(addr)).unwrap();

        let pixels = &state.shape.as_ref().unwrap().pixels;
        assert_eq!(pixels, &[0xff00_0000, 0xffff_ffff, 0xff00_0000, 0]);
    }

    #[test]
    fn oversized_cursors_are_refused_and_the_old_one_kept() {
        let (bars, slots) = setup();
        let good = shape(&bars, &slots, SPICE_CURSOR_TYPE_ALPHA, 1, 1, &[1, 2, 3, 4]);
        let mut state = CursorState::default();
        state.apply(&bars, &slots, set(good)).unwrap();
        let before = state.clone();

        for (w, h) in [
            (0x8000, 0x8000),
            (65535, 65535),
            (600, 600),
            (0, 1),
            (64, 64),
        ] {
            let addr = shape(&bars, &slots, SPICE_CURSOR_TYPE_ALPHA, w, h, &[0xaa; 64]);
            let result = state.apply(&bars, &slots, set(addr));
            assert!(
                matches!(result, Err(QxlGuestError::BadCursor { .. })),
                "{w}x{h}"
            );
            assert_eq!(state, before);
        }

        let addr = shape(&bars, &slots, 6, 1, 1, &[0; 4]);
        assert!(state.apply(&bars, &slots, set(addr)).is_err());
        assert!(state.apply(&bars, &slots, set(0)).is_err());
        assert_eq!(state, before);
    }

    #[test]
    fn claimed_size_must_match_the_chunks() {
        let (bars, slots) = setup();
        let addr = shape(&bars, &slots, SPICE_CURSOR_TYPE_ALPHA, 4, 4, &[0; 64]);
        bars.write_u32(GuestPtr::new(Bar::Ram, 0x1000 + 22), 16)
            .unwrap();
        let mut state = CursorState::default();

        assert!(matches!(
            state.apply(&bars, &slots, set(addr)),
            Err(QxlGuestError::ChunkBytes { .. })
        ));
        bars.write_u32(GuestPtr::new(Bar::Ram, 0x1000 + 22), u32::MAX)
            .unwrap();
        assert!(state.apply(&bars, &slots, set(addr)).is_err());
        assert_eq!(state, CursorState::default());
    }

    #[test]
    fn move_hide_and_trail() {
        let (bars, slots) = setup();
        let mut state = CursorState::default();

        state
            .apply(&bars, &slots, CursorCmd::Move { x: -5, y: 7 })
            .unwrap();
        assert_eq!((state.x, state.y, state.visible), (-5, 7, true));
        state.apply(&bars, &slots, CursorCmd::Hide).unwrap();
        assert!(!state.visible);
        state.apply(&bars, &slots, CursorCmd::Trail).unwrap();
        assert_eq!(state.serial, 2);
    }
}
