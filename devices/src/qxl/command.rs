// SPDX-License-Identifier: Apache-2.0
//! Command bodies: QXLCommand ring items, QXLDrawable, QXLSurfaceCmd, QXLCursorCmd and clip
//! lists, each read once into a local copy and parsed from that copy.

use super::chunk::walk_chunks;
use super::error::QxlGuestError;
use super::memory::{le_i32, le_u16, le_u32, le_u64, GuestBars};
use super::memslot::MemSlots;
use super::rect::{Rect, RECT_SIZE};
use super::regs::*;

/// Bytes of a QXLDrawable.
pub const DRAWABLE_SIZE: usize = 191;
/// Bytes of a QXLSurfaceCmd.
pub const SURFACE_CMD_SIZE: usize = 41;
/// Bytes of the part of a QXLCursorCmd the engine reads (release_info, type, union).
pub const CURSOR_CMD_SIZE: usize = 22;
/// Most clip rectangles a drawable may carry.
pub const MAX_CLIP_RECTS: u32 = 1024;

/// Offset of the drawable union `u`.
const U: usize = 123;

/// A command-ring or cursor-ring item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// QXLPHYSICAL of the body.
    pub data: u64,
    /// QXL_CMD_*.
    pub kind: u32,
}

impl Command {
    /// Parses a 16-byte QXLCommand.
    pub fn from_le_bytes(b: &[u8; 16]) -> Self {
        Command {
            data: le_u64(b, 0),
            kind: le_u32(b, 8),
        }
    }
}

/// A QXLBrush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brush {
    /// No brush.
    None,
    /// One colour, 0xXXRRGGBB.
    Solid(u32),
    /// An image pattern (not rendered).
    Pattern,
    /// An unknown brush type.
    Unknown(u32),
}

impl Brush {
    fn parse(b: &[u8]) -> Self {
        match le_u32(b, 0) {
            SPICE_BRUSH_TYPE_NONE => Brush::None,
            SPICE_BRUSH_TYPE_SOLID => Brush::Solid(le_u32(b, 4)),
            SPICE_BRUSH_TYPE_PATTERN => Brush::Pattern,
            other => Brush::Unknown(other),
        }
    }
}

/// A source image and how it maps onto the bounding box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopySource {
    /// QXLPHYSICAL of the QXLImage.
    pub image: u64,
    /// Part of the image that is stretched over the bounding box.
    pub area: Rect,
}

/// The type-specific part of a drawable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrawBody {
    /// QXL_DRAW_FILL.
    Fill {
        /// The brush.
        brush: Brush,
        /// SPICE_ROPD_* bits.
        rop: u16,
    },
    /// QXL_DRAW_COPY, QXL_DRAW_BLEND and QXL_DRAW_OPAQUE (its brush is not used).
    Copy {
        /// The source.
        src: CopySource,
        /// SPICE_ROPD_* bits.
        rop: u16,
    },
    /// QXL_DRAW_COPY_BITS: the bounding box's content comes from `(x, y)` of the same
    /// surface.
    CopyBits {
        /// Source left.
        x: i32,
        /// Source top.
        y: i32,
    },
    /// QXL_DRAW_BLACKNESS, QXL_DRAW_WHITENESS, QXL_DRAW_INVERS as their raster operation.
    Rop(u16),
    /// QXL_DRAW_NOP.
    Nop,
    /// A draw type the engine does not render.
    Unsupported(u8),
}

/// A parsed QXLDrawable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drawable {
    /// Destination surface.
    pub surface_id: u32,
    /// QXL_DRAW_*.
    pub draw_type: u8,
    /// Destination rectangle.
    pub bbox: Rect,
    /// SPICE_CLIP_TYPE_*.
    pub clip_type: u32,
    /// QXLPHYSICAL of the QXLClipRects when `clip_type` is RECTS.
    pub clip_data: u64,
    /// Whether a QXLQMask bitmap is attached (masks are not applied).
    pub has_mask: bool,
    /// The type-specific part.
    pub body: DrawBody,
}

/// Returns whether the QXLQMask at `off` names a bitmap.
fn mask_at(b: &[u8], off: usize) -> bool {
    le_u64(b, off + 9) != 0
}

fn rect_at(b: &[u8], off: usize) -> Rect {
    let mut r = [0u8; RECT_SIZE];
    r.copy_from_slice(&b[off..off + RECT_SIZE]);
    Rect::from_le_bytes(&r)
}

impl Drawable {
    /// Parses a local copy of a QXLDrawable.
    pub fn parse(b: &[u8; DRAWABLE_SIZE]) -> Self {
        let draw_type = b[13];
        let (body, has_mask) = match draw_type {
            QXL_DRAW_FILL => {
                let rop = le_u16(b, U + 20);
                (
                    DrawBody::Fill {
                        brush: Brush::parse(&b[U..]),
                        rop,
                    },
                    mask_at(b, U + 22),
                )
            }
            QXL_DRAW_COPY | QXL_DRAW_BLEND => (copy_body(b, U + 24), mask_at(b, U + 27)),
            QXL_DRAW_OPAQUE => (copy_body(b, U + 44), mask_at(b, U + 47)),
            QXL_DRAW_COPY_BITS => (
                DrawBody::CopyBits {
                    x: le_i32(b, U),
                    y: le_i32(b, U + 4),
                },
                false,
            ),
            QXL_DRAW_BLACKNESS => (DrawBody::Rop(SPICE_ROPD_OP_BLACKNESS), mask_at(b, U)),
            QXL_DRAW_WHITENESS => (DrawBody::Rop(SPICE_ROPD_OP_WHITENESS), mask_at(b, U)),
            QXL_DRAW_INVERS => (DrawBody::Rop(SPICE_ROPD_OP_INVERS), mask_at(b, U)),
            QXL_DRAW_NOP => (DrawBody::Nop, false),
            other => (DrawBody::Unsupported(other), false),
        };

        Drawable {
            surface_id: le_u32(b, 8),
            draw_type,
            bbox: rect_at(b, 31),
            clip_type: le_u32(b, 47),
            clip_data: le_u64(b, 51),
            has_mask,
            body,
        }
    }
}

/// Parses the QXLCopy-like source at `U`, with the rop descriptor at `rop_off`.
fn copy_body(b: &[u8], rop_off: usize) -> DrawBody {
    DrawBody::Copy {
        src: CopySource {
            image: le_u64(b, U),
            area: rect_at(b, U + 8),
        },
        rop: le_u16(b, rop_off),
    }
}

/// Reads the QXLClipRects at `addr`: a u32 count and a chunk chain of exactly that many
/// QXLRects.
pub fn read_clip_rects(
    bars: &GuestBars,
    slots: &MemSlots,
    addr: u64,
) -> Result<Vec<Rect>, QxlGuestError> {
    if addr == 0 {
        return Err(QxlGuestError::NullAddress("clip rects"));
    }
    let count = bars.read_u32(slots.translate(addr, 4)?)?;
    if count > MAX_CLIP_RECTS {
        return Err(QxlGuestError::TooManyClipRects(count));
    }

    let chunk = addr
        .checked_add(4)
        .ok_or(QxlGuestError::NullAddress("clip rects"))?;
    let bytes = u64::from(count) * RECT_SIZE as u64;
    let stream = walk_chunks(bars, slots, chunk, bytes)?;
    let mut buf = vec![0u8; count as usize * RECT_SIZE];
    stream.read(bars, 0, &mut buf)?;

    Ok(buf.chunks_exact(RECT_SIZE).map(|r| rect_at(r, 0)).collect())
}

/// A parsed QXLSurfaceCmd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SurfaceCmd {
    /// Surface id.
    pub surface_id: u32,
    /// QXL_SURFACE_CMD_*.
    pub kind: u8,
    /// QXL_SURF_FLAG_*.
    pub flags: u32,
    /// SPICE_SURFACE_FMT_*.
    pub format: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stride in bytes (negative = bottom-up).
    pub stride: i32,
    /// QXLPHYSICAL of the pixel memory.
    pub data: u64,
}

impl SurfaceCmd {
    /// Parses a local copy of a QXLSurfaceCmd.
    pub fn parse(b: &[u8; SURFACE_CMD_SIZE]) -> Self {
        SurfaceCmd {
            surface_id: le_u32(b, 8),
            kind: b[12],
            flags: le_u32(b, 13),
            format: le_u32(b, 17),
            width: le_u32(b, 21),
            height: le_u32(b, 25),
            stride: le_i32(b, 29),
            data: le_u64(b, 33),
        }
    }
}

/// A parsed QXLCursorCmd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorCmd {
    /// New shape (QXLPHYSICAL of a QXLCursor), position and visibility.
    Set {
        /// Hotspot x in primary-surface pixels.
        x: i16,
        /// Hotspot y.
        y: i16,
        /// Whether the cursor shows.
        visible: bool,
        /// QXLPHYSICAL of the QXLCursor.
        shape: u64,
    },
    /// New position.
    Move {
        /// Hotspot x.
        x: i16,
        /// Hotspot y.
        y: i16,
    },
    /// Hide the cursor.
    Hide,
    /// Mouse trails (ignored).
    Trail,
}

impl CursorCmd {
    /// Parses a local copy of the start of a QXLCursorCmd.
    pub fn parse(b: &[u8; CURSOR_CMD_SIZE]) -> Result<Self, QxlGuestError> {
        let x = i16::from_le_bytes([b[9], b[10]]);
        let y = i16::from_le_bytes([b[11], b[12]]);
        match b[8] {
            QXL_CURSOR_SET => Ok(CursorCmd::Set {
                x,
                y,
                visible: b[13] != 0,
                shape: le_u64(b, 14),
            }),
            QXL_CURSOR_MOVE => Ok(CursorCmd::Move { x, y }),
            QXL_CURSOR_HIDE => Ok(CursorCmd::Hide),
            QXL_CURSOR_TRAIL => Ok(CursorCmd::Trail),
            other => Err(QxlGuestError::BadCursorCommand(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drawable(draw_type: u8) -> [u8; DRAWABLE_SIZE] {
        let mut b = [0u8; DRAWABLE_SIZE];
        b[0..8].copy_from_slice(&42u64.to_le_bytes());
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[13] = draw_type;
        for (i, v) in [1i32, 2, 30, 40].iter().enumerate() {
            b[31 + 4 * i..35 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[47..51].copy_from_slice(&SPICE_CLIP_TYPE_RECTS.to_le_bytes());
        b[51..59].copy_from_slice(&0x0100_0000_0000_1000u64.to_le_bytes());
        b
    }

    #[test]
    fn copy_fields_are_at_their_offsets() {
        let mut b = drawable(QXL_DRAW_COPY);
        b[U..U + 8].copy_from_slice(&0x0100_0000_0000_2000u64.to_le_bytes());
        for (i, v) in [0i32, 0, 38, 28].iter().enumerate() {
            b[U + 8 + 4 * i..U + 12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[U + 24..U + 26].copy_from_slice(&SPICE_ROPD_OP_PUT.to_le_bytes());

        let d = Drawable::parse(&b);
        assert_eq!(d.surface_id, 3);
        assert_eq!(d.bbox, Rect::new(2, 1, 40, 30));
        assert_eq!(d.clip_type, SPICE_CLIP_TYPE_RECTS);
        assert_eq!(d.clip_data, 0x0100_0000_0000_1000);
        assert!(!d.has_mask);
        assert_eq!(
            d.body,
            DrawBody::Copy {
                src: CopySource {
                    image: 0x0100_0000_0000_2000,
                    area: Rect::new(0, 0, 28, 38),
                },
                rop: SPICE_ROPD_OP_PUT,
            }
        );

        b[U + 36] = 1;
        assert!(Drawable::parse(&b).has_mask);
    }

    #[test]
    fn other_bodies_parse() {
        let mut b = drawable(QXL_DRAW_FILL);
        b[U..U + 4].copy_from_slice(&SPICE_BRUSH_TYPE_SOLID.to_le_bytes());
        b[U + 4..U + 8].copy_from_slice(&0x123456u32.to_le_bytes());
        b[U + 20..U + 22].copy_from_slice(&SPICE_ROPD_OP_XOR.to_le_bytes());
        assert_eq!(
            Drawable::parse(&b).body,
            DrawBody::Fill {
                brush: Brush::Solid(0x123456),
                rop: SPICE_ROPD_OP_XOR
            }
        );

        let mut b = drawable(QXL_DRAW_OPAQUE);
        b[U + 44..U + 46].copy_from_slice(&SPICE_ROPD_OP_OR.to_le_bytes());
        assert!(matches!(
            Drawable::parse(&b).body,
            DrawBody::Copy {
                rop: SPICE_ROPD_OP_OR,
                ..
            }
        ));

        let mut b = drawable(QXL_DRAW_COPY_BITS);
        b[U..U + 4].copy_from_slice(&(-5i32).to_le_bytes());
        b[U + 4..U + 8].copy_from_slice(&7i32.to_le_bytes());
        assert_eq!(Drawable::parse(&b).body, DrawBody::CopyBits { x: -5, y: 7 });

        let b = drawable(QXL_DRAW_WHITENESS);
        assert_eq!(
            Drawable::parse(&b).body,
            DrawBody::Rop(SPICE_ROPD_OP_WHITENESS)
        );
        let b = drawable(QXL_DRAW_TEXT);
        assert_eq!(
            Drawable::parse(&b).body,
            DrawBody::Unsupported(QXL_DRAW_TEXT)
        );
    }

    #[test]
    fn surface_and_cursor_commands_parse() {
        let mut b = [0u8; SURFACE_CMD_SIZE];
        b[8..12].copy_from_slice(&9u32.to_le_bytes());
        b[12] = QXL_SURFACE_CMD_CREATE;
        b[13..17].copy_from_slice(&1u32.to_le_bytes());
        b[17..21].copy_from_slice(&SPICE_SURFACE_FMT_32_ARGB.to_le_bytes());
        b[21..25].copy_from_slice(&64u32.to_le_bytes());
        b[25..29].copy_from_slice(&32u32.to_le_bytes());
        b[29..33].copy_from_slice(&(-256i32).to_le_bytes());
        b[33..41].copy_from_slice(&0x0200_0000_0000_0000u64.to_le_bytes());
        let s = SurfaceCmd::parse(&b);
        assert_eq!((s.surface_id, s.kind, s.flags), (9, 0, 1));
        assert_eq!((s.format, s.width, s.height, s.stride), (96, 64, 32, -256));
        assert_eq!(s.data, 0x0200_0000_0000_0000);

        let mut c = [0u8; CURSOR_CMD_SIZE];
        c[9..11].copy_from_slice(&(-3i16).to_le_bytes());
        c[11..13].copy_from_slice(&500i16.to_le_bytes());
        c[13] = 1;
        c[14..22].copy_from_slice(&0x77u64.to_le_bytes());
        let set = CursorCmd::Set {
            x: -3,
            y: 500,
            visible: true,
            shape: 0x77,
        };
        assert_eq!(CursorCmd::parse(&c), Ok(set));
        c[8] = QXL_CURSOR_MOVE;
        assert_eq!(CursorCmd::parse(&c), Ok(CursorCmd::Move { x: -3, y: 500 }));
        c[8] = 9;
        assert_eq!(
            CursorCmd::parse(&c),
            Err(QxlGuestError::BadCursorCommand(9))
        );
    }

    #[test]
    fn ring_items_parse() {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&0x0100_0000_0000_0040u64.to_le_bytes());
        b[8..12].copy_from_slice(&QXL_CMD_SURFACE.to_le_bytes());
        let c = Command::from_le_bytes(&b);
        assert_eq!(c.data, 0x0100_0000_0000_0040);
        assert_eq!(c.kind, QXL_CMD_SURFACE);
    }
}
