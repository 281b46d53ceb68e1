// SPDX-License-Identifier: Apache-2.0
//! QXLImage: uncompressed bitmaps (with their palettes and chunked or direct data) and
//! references to other surfaces, decoded row by row into 0xAARRGGBB pixels.

use super::chunk::{walk_chunks, DataStream};
use super::error::QxlGuestError;
use super::memory::{le_u16, le_u32, le_u64, GuestBars, GuestPtr};
use super::memslot::MemSlots;
use super::regs::*;

/// Largest bitmap width or height accepted.
pub const MAX_IMAGE_DIM: u32 = 8192;
/// Bytes of the QXLImageDescriptor.
const DESCRIPTOR_LEN: usize = 18;
const DESCRIPTOR_SIZE: u64 = DESCRIPTOR_LEN as u64;
/// Bytes of a QXLBitmap.
const BITMAP_LEN: usize = 30;
const BITMAP_SIZE: u64 = BITMAP_LEN as u64;
/// Bytes of the QXLPalette header (u64 unique, u16 num_ents).
const PALETTE_HEADER_LEN: usize = 10;
const PALETTE_HEADER_SIZE: u64 = PALETTE_HEADER_LEN as u64;
/// Alpha of an opaque pixel.
pub const OPAQUE: u32 = 0xff00_0000;

/// Where a drawable's source pixels come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// An uncompressed bitmap in guest memory.
    Bitmap(Bitmap),
    /// Another surface, by id.
    Surface(u32),
}

/// A checked uncompressed bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    /// SPICE_BITMAP_FMT_*.
    pub format: u8,
    /// Row 0 of `data` is the top row.
    pub top_down: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row in `data`.
    pub stride: u32,
    /// Palette entries as 0xAARRGGBB, for the indexed formats.
    pub palette: Vec<u32>,
    /// Exactly `height * stride` bytes of pixel rows.
    pub data: DataStream,
}

/// Returns the bits per pixel of a bitmap format the engine decodes.
fn bitmap_bpp(format: u8) -> Option<u32> {
    match format {
        SPICE_BITMAP_FMT_1BIT_LE | SPICE_BITMAP_FMT_1BIT_BE => Some(1),
        SPICE_BITMAP_FMT_4BIT_LE | SPICE_BITMAP_FMT_4BIT_BE => Some(4),
        SPICE_BITMAP_FMT_8BIT => Some(8),
        SPICE_BITMAP_FMT_16BIT => Some(16),
        SPICE_BITMAP_FMT_24BIT => Some(24),
        SPICE_BITMAP_FMT_32BIT | SPICE_BITMAP_FMT_RGBA => Some(32),
        _ => None,
    }
}

/// Reads and checks the QXLImage at `addr`.
pub fn parse_image(
    bars: &GuestBars,
    slots: &MemSlots,
    addr: u64,
) -> Result<ImageSource, QxlGuestError> {
    if addr == 0 {
        return Err(QxlGuestError::NullAddress("image"));
    }
    let mut desc = [0u8; DESCRIPTOR_LEN];
    bars.read(slots.translate(addr, DESCRIPTOR_SIZE)?, &mut desc)?;

    match desc[8] {
        SPICE_IMAGE_TYPE_BITMAP => {
            let ptr = slots.translate(addr, DESCRIPTOR_SIZE + BITMAP_SIZE)?;
            let mut b = [0u8; BITMAP_LEN];
            bars.read(
                ptr.add(DESCRIPTOR_SIZE)
                    .ok_or(QxlGuestError::NullAddress("image"))?,
                &mut b,
            )?;
            parse_bitmap(bars, slots, &b).map(ImageSource::Bitmap)
        }
        SPICE_IMAGE_TYPE_SURFACE => {
            let ptr = slots.translate(addr, DESCRIPTOR_SIZE + 4)?;
            let id = bars.read_u32(GuestPtr::new(ptr.bar, ptr.offset + DESCRIPTOR_SIZE))?;
            Ok(ImageSource::Surface(id))
        }
        other => Err(QxlGuestError::UnsupportedImage(other)),
    }
}

/// Checks a QXLBitmap copy and gathers its palette and data.
fn parse_bitmap(
    bars: &GuestBars,
    slots: &MemSlots,
    b: &[u8; BITMAP_LEN],
) -> Result<Bitmap, QxlGuestError> {
    let (format, flags) = (b[0], b[1]);
    let (width, height, stride) = (le_u32(b, 2), le_u32(b, 6), le_u32(b, 10));
    let (palette_addr, data_addr) = (le_u64(b, 14), le_u64(b, 22));

    let bpp = bitmap_bpp(format).ok_or(QxlGuestError::UnsupportedBitmap(format))?;
    let bad = QxlGuestError::BadBitmap {
        width,
        height,
        stride,
    };
    let row_bytes = (u64::from(width) * u64::from(bpp)).div_ceil(8);
    if width == 0 || height == 0 || width > MAX_IMAGE_DIM || height > MAX_IMAGE_DIM {
        return Err(bad);
    }
    if u64::from(stride) < row_bytes {
        return Err(bad);
    }

    let palette = match bpp {
        1 | 4 | 8 => read_palette(bars, slots, palette_addr, 1 << bpp)?,
        _ => Vec::new(),
    };

    let size = u64::from(stride) * u64::from(height);
    let data = if flags & QXL_BITMAP_DIRECT != 0 {
        DataStream::contiguous(slots.translate(data_addr, size)?, size)
    } else {
        walk_chunks(bars, slots, data_addr, size)?
    };

    Ok(Bitmap {
        format,
        top_down: flags & QXL_BITMAP_TOP_DOWN != 0,
        width,
        height,
        stride,
        palette,
        data,
    })
}

/// Reads at most `max` entries of the QXLPalette at `addr`.
fn read_palette(
    bars: &GuestBars,
    slots: &MemSlots,
    addr: u64,
    max: u16,
) -> Result<Vec<u32>, QxlGuestError> {
    if addr == 0 {
        return Err(QxlGuestError::MissingPalette);
    }
    let mut header = [0u8; PALETTE_HEADER_LEN];
    bars.read(slots.translate(addr, PALETTE_HEADER_SIZE)?, &mut header)?;
    let count = le_u16(&header, 8).min(max);

    let size = PALETTE_HEADER_SIZE + 4 * u64::from(count);
    let ptr = slots.translate(addr, size)?;
    let mut ents = vec![0u8; 4 * usize::from(count)];
    bars.read(
        GuestPtr::new(ptr.bar, ptr.offset + PALETTE_HEADER_SIZE),
        &mut ents,
    )?;

    Ok(ents
        .chunks_exact(4)
        .map(|e| OPAQUE | le_u32(e, 0))
        .collect())
}

/// Expands a 5-bit channel to 8 bits.
fn expand5(v: u16) -> u32 {
    let v = u32::from(v & 0x1f);
    (v << 3) | (v >> 2)
}

impl Bitmap {
    /// Bits per pixel.
    pub fn bpp(&self) -> u32 {
        bitmap_bpp(self.format).unwrap_or(32)
    }

    /// Returns whether rows hold 4-byte pixels that can be copied unchanged to a 32-bit
    /// surface.
    pub fn is_raw32(&self) -> bool {
        matches!(self.format, SPICE_BITMAP_FMT_32BIT | SPICE_BITMAP_FMT_RGBA)
    }

    /// Returns whether the pixels carry real alpha.
    pub fn has_alpha(&self) -> bool {
        self.format == SPICE_BITMAP_FMT_RGBA
    }

    /// Stream offset of image row `y` (0 = top).
    pub fn row_offset(&self, y: u32) -> u64 {
        let row = if self.top_down {
            y
        } else {
            self.height.saturating_sub(1).saturating_sub(y)
        };
        u64::from(row) * u64::from(self.stride)
    }

    /// Decodes pixels `[x, x + out.len())` of row `y` (0 = top) into `out` as 0xAARRGGBB;
    /// `scratch` is a reusable byte buffer. The caller keeps the range inside the bitmap.
    pub fn read_row(
        &self,
        bars: &GuestBars,
        y: u32,
        x: u32,
        out: &mut [u32],
        scratch: &mut Vec<u8>,
    ) -> Result<(), QxlGuestError> {
        let bpp = u64::from(self.bpp());
        let count = out.len() as u64;
        let first_bit = u64::from(x) * bpp;
        let byte_start = first_bit / 8;
        let byte_end = (first_bit + count * bpp).div_ceil(8);

        scratch.resize(usize::try_from(byte_end - byte_start).unwrap_or(0), 0);
        self.data
            .read(bars, self.row_offset(y) + byte_start, scratch)?;

        let bit0 = usize::try_from(first_bit % 8).unwrap_or(0);
        self.decode(scratch, bit0, out);
        Ok(())
    }

    /// Decodes `out.len()` pixels from `bytes`, the first at bit `bit0` of `bytes[0]`.
    fn decode(&self, bytes: &[u8], bit0: usize, out: &mut [u32]) {
        let lookup = |i: usize| self.palette.get(i).copied().unwrap_or(OPAQUE);
        match self.format {
            SPICE_BITMAP_FMT_32BIT => decode_each(out, bytes, 4, |p| OPAQUE | le_u32(p, 0)),
            SPICE_BITMAP_FMT_RGBA => decode_each(out, bytes, 4, |p| le_u32(p, 0)),
            SPICE_BITMAP_FMT_24BIT => decode_each(out, bytes, 3, |p| {
                OPAQUE | u32::from(p[2]) << 16 | u32::from(p[1]) << 8 | u32::from(p[0])
            }),
            SPICE_BITMAP_FMT_16BIT => decode_each(out, bytes, 2, |p| {
                let v = le_u16(p, 0);
                OPAQUE | expand5(v >> 10) << 16 | expand5(v >> 5) << 8 | expand5(v)
            }),
            SPICE_BITMAP_FMT_8BIT => decode_each(out, bytes, 1, |p| lookup(usize::from(p[0]))),
            _ => {
                for (i, px) in out.iter_mut().enumerate() {
                    *px = lookup(self.sub_byte_index(bytes, bit0 + i * self.bpp() as usize));
                }
            }
        }
    }

    /// Returns the palette index at bit position `bit` of a 1- or 4-bit row.
    fn sub_byte_index(&self, bytes: &[u8], bit: usize) -> usize {
        let byte = bytes.get(bit / 8).copied().unwrap_or(0);
        let shift = bit % 8;
        let index = match self.format {
            SPICE_BITMAP_FMT_1BIT_LE => byte >> shift & 1,
            SPICE_BITMAP_FMT_1BIT_BE => byte >> (7 - shift) & 1,
            SPICE_BITMAP_FMT_4BIT_LE => byte >> shift & 0xf,
            _ => byte >> (4 - shift) & 0xf,
        };
        usize::from(index)
    }
}

/// Fills `out` from consecutive `size`-byte pixels of `bytes`.
fn decode_each(out: &mut [u32], bytes: &[u8], size: usize, f: impl Fn(&[u8]) -> u32) {
    for (px, b) in out.iter_mut().zip(bytes.chunks_exact(size)) {
        *px = f(b);
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::qxl::memory::Bar;

    const BASE: u64 = 0x8000_0000;
    const SIZE: u64 = 1 << 20;

    struct Fixture {
        bars: GuestBars,
        slots: MemSlots,
    }

    impl Fixture {
        fn new() -> Self {
            let (bars, slots) = crate::qxl::testutil::ram_slot(BASE, SIZE, SIZE);
            Fixture { bars, slots }
        }

        fn write(&self, off: u64, b: &[u8]) -> u64 {
            self.bars.write(GuestPtr::new(Bar::Ram, off), b).unwrap();
            self.slots.address(1, off)
        }

        /// Writes a DIRECT bitmap image at 0x1000 with data at 0x4000 and palette at 0x3000.
        fn bitmap(&self, format: u8, flags: u8, w: u32, h: u32, stride: u32, data: &[u8]) -> u64 {
            let palette = self.write(0x3000, &palette_bytes(&[0x112233, 0x445566, 0x778899]));
            let data = self.write(0x4000, data);
            let mut b = vec![0u8; 18];
            b[8] = SPICE_IMAGE_TYPE_BITMAP;
            b.push(format);
            b.push(flags | QXL_BITMAP_DIRECT);
            for v in [w, h, stride] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&palette.to_le_bytes());
            b.extend_from_slice(&data.to_le_bytes());
            self.write(0x1000, &b)
        }

        fn row(&self, addr: u64, y: u32, x: u32, n: usize) -> Vec<u32> {
            let ImageSource::Bitmap(bitmap) = parse_image(&self.bars, &self.slots, addr).unwrap()
            else {
                panic!("not a bitmap");
            };
            let mut out = vec![0; n];
            bitmap
                .read_row(&self.bars, y, x, &mut out, &mut Vec::new())
                .unwrap();
            out
        }
    }

    fn palette_bytes(ents: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&u16::try_from(ents.len()).unwrap().to_le_bytes());
        ents.iter()
            .for_each(|e| b.extend_from_slice(&e.to_le_bytes()));
        b
    }

    #[test]
    fn direct_formats_decode() {
        let f = Fixture::new();
        let a = f.bitmap(
            SPICE_BITMAP_FMT_32BIT,
            4,
            2,
            1,
            8,
            &[1, 2, 3, 0, 4, 5, 6, 9],
        );
        assert_eq!(f.row(a, 0, 0, 2), [0xff030201, 0xff060504]);
        let a = f.bitmap(SPICE_BITMAP_FMT_RGBA, 4, 2, 1, 8, &[1, 2, 3, 0, 4, 5, 6, 9]);
        assert_eq!(f.row(a, 0, 1, 1), [0x09060504]);
        let a = f.bitmap(SPICE_BITMAP_FMT_24BIT, 4, 2, 1, 8, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(f.row(a, 0, 0, 2), [0xff030201, 0xff060504]);
        let a = f.bitmap(
            SPICE_BITMAP_FMT_16BIT,
            4,
            2,
            1,
            4,
            &[0x00, 0x7c, 0xff, 0x03],
        );
        assert_eq!(f.row(a, 0, 0, 2), [0xffff0000, 0xff00ffff]);
    }

    #[test]
    fn palette_formats_decode() {
        let f = Fixture::new();
        let (c0, c1, c2) = (0xff112233, 0xff445566, 0xff778899);
        let a = f.bitmap(SPICE_BITMAP_FMT_8BIT, 4, 4, 1, 4, &[2, 0, 1, 200]);
        assert_eq!(f.row(a, 0, 0, 4), [c2, c0, c1, OPAQUE]);
        let a = f.bitmap(
            SPICE_BITMAP_FMT_1BIT_BE,
            4,
            10,
            1,
            2,
            &[0b1010_0000, 0b0100_0000],
        );
        assert_eq!(f.row(a, 0, 0, 3), [c1, c0, c1]);
        assert_eq!(f.row(a, 0, 8, 2), [c0, c1]);
        let a = f.bitmap(SPICE_BITMAP_FMT_1BIT_LE, 4, 10, 1, 2, &[0b0000_0101, 0b10]);
        assert_eq!(f.row(a, 0, 0, 3), [c1, c0, c1]);
        assert_eq!(f.row(a, 0, 9, 1), [c1]);
        let a = f.bitmap(SPICE_BITMAP_FMT_4BIT_BE, 4, 3, 1, 2, &[0x21, 0x0f]);
        assert_eq!(f.row(a, 0, 0, 3), [c2, c1, c0]);
        let a = f.bitmap(SPICE_BITMAP_FMT_4BIT_LE, 4, 3, 1, 2, &[0x21, 0xf0]);
        assert_eq!(f.row(a, 0, 1, 2), [c2, c0]);
    }

    #[test]
    fn bottom_up_rows_are_flipped() {
        let f = Fixture::new();
        let a = f.bitmap(SPICE_BITMAP_FMT_8BIT, 0, 1, 2, 4, &[1, 0, 0, 0, 2]);
        assert_eq!(f.row(a, 0, 0, 1), [0xff778899]);
        assert_eq!(f.row(a, 1, 0, 1), [0xff445566]);
    }

    #[test]
    fn surface_images_name_the_surface() {
        let f = Fixture::new();
        let mut b = vec![0u8; 18];
        b[8] = SPICE_IMAGE_TYPE_SURFACE;
        b.extend_from_slice(&7u32.to_le_bytes());
        let a = f.write(0x1000, &b);
        assert_eq!(
            parse_image(&f.bars, &f.slots, a),
            Ok(ImageSource::Surface(7))
        );
    }

    #[test]
    fn bad_bitmaps_are_refused() {
        let f = Fixture::new();
        let parse = |a| parse_image(&f.bars, &f.slots, a);

        let a = f.bitmap(SPICE_BITMAP_FMT_32BIT, 0, 0, 1, 4, &[]);
        assert!(matches!(parse(a), Err(QxlGuestError::BadBitmap { .. })));
        let a = f.bitmap(SPICE_BITMAP_FMT_32BIT, 0, 8193, 1, 32772, &[]);
        assert!(matches!(parse(a), Err(QxlGuestError::BadBitmap { .. })));
        let a = f.bitmap(SPICE_BITMAP_FMT_32BIT, 0, 2, 1, 7, &[]);
        assert!(matches!(parse(a), Err(QxlGuestError::BadBitmap { .. })));
        let a = f.bitmap(SPICE_BITMAP_FMT_32BIT, 0, 8192, 8192, u32::MAX, &[]);
        assert!(matches!(parse(a), Err(QxlGuestError::OutsideSlot { .. })));
        let a = f.bitmap(SPICE_BITMAP_FMT_8BIT_A, 0, 1, 1, 4, &[]);
        assert_eq!(
            parse(a),
            Err(QxlGuestError::UnsupportedBitmap(SPICE_BITMAP_FMT_8BIT_A))
        );

        let a = f.bitmap(SPICE_BITMAP_FMT_8BIT, 0, 1, 1, 4, &[]);
        f.bars
            .write_u64(GuestPtr::new(Bar::Ram, 0x1000 + 18 + 14), 0)
            .unwrap();
        assert_eq!(parse(a), Err(QxlGuestError::MissingPalette));

        let mut b = vec![0u8; 18];
        b[8] = SPICE_IMAGE_TYPE_QUIC;
        let a = f.write(0x1000, &b);
        assert_eq!(
            parse(a),
            Err(QxlGuestError::UnsupportedImage(SPICE_IMAGE_TYPE_QUIC))
        );
        assert!(parse(0).is_err());
    }
}
