// SPDX-License-Identifier: Apache-2.0
//! Marshalling of the display channel's server messages (reference section 7).
//!
//! All drawing targets surface 0 (the primary) with clip NONE and no mask. Images are
//! uncached: each carries its pixels, as a raw top-down 32-bit bitmap or as LZ4.

use crate::proto::*;
use crate::wire::Writer;
use crate::Rect;

/// Offset of the image inside a DRAW_COPY body with clip NONE: the `src_bitmap` pointer value.
const DRAW_COPY_IMAGE_OFFSET: u32 = 57;
/// Largest raw band of an image sent as one DRAW_COPY; bigger images are split by rows so no
/// single message dominates the client's queue budget.
pub const BAND_BYTES: usize = 1 << 20;

/// A message ready to be framed: its type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMsg {
    /// Message type number.
    pub msg_type: u16,
    /// Message body, without the data header.
    pub body: Vec<u8>,
}

impl OutMsg {
    /// Bundles a type and a body.
    pub fn new(msg_type: u16, body: Vec<u8>) -> Self {
        OutMsg { msg_type, body }
    }
}

/// SURFACE_CREATE for the primary surface, 32-bit xRGB.
pub fn surface_create(width: u32, height: u32) -> OutMsg {
    let mut w = Writer::with_capacity(20);
    w.u32(0).u32(width).u32(height);
    w.u32(SURFACE_FMT_32_XRGB).u32(SURFACE_FLAGS_PRIMARY);
    OutMsg::new(MSG_DISPLAY_SURFACE_CREATE, w.finish())
}

/// SURFACE_DESTROY of the primary surface.
pub fn surface_destroy() -> OutMsg {
    OutMsg::new(MSG_DISPLAY_SURFACE_DESTROY, 0u32.to_le_bytes().to_vec())
}

/// MARK: the client may show the primary surface from now on.
pub fn mark() -> OutMsg {
    OutMsg::new(MSG_DISPLAY_MARK, Vec::new())
}

/// DisplayBase: surface 0, the box and clip NONE (21 bytes).
fn display_base(w: &mut Writer, dest: Rect) {
    w.u32(0).rect(dest).u8(CLIP_TYPE_NONE);
}

/// QMask without a bitmap (13 bytes).
fn no_mask(w: &mut Writer) {
    w.u8(0).i32(0).i32(0).u32(0);
}

/// DRAW_FILL of `dest` with a solid xRGB `color`, ROP copy.
pub fn draw_fill(dest: Rect, color: u32) -> OutMsg {
    let mut w = Writer::with_capacity(41);
    display_base(&mut w, dest);
    w.u8(BRUSH_TYPE_SOLID).u32(color);
    w.u16(ROPD_OP_PUT);
    no_mask(&mut w);
    OutMsg::new(MSG_DISPLAY_DRAW_FILL, w.finish())
}

/// COPY_BITS: copies the area of `dest`'s size at (src_x, src_y) to `dest`.
pub fn copy_bits(src_x: i32, src_y: i32, dest: Rect) -> OutMsg {
    let mut w = Writer::with_capacity(29);
    display_base(&mut w, dest);
    w.i32(src_x).i32(src_y);
    OutMsg::new(MSG_DISPLAY_COPY_BITS, w.finish())
}

/// How the pixels of a DRAW_COPY are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCodec {
    /// Raw 32-bit top-down bitmap.
    Bitmap,
    /// LZ4 when it is smaller than the raw bitmap (the client advertised the LZ4 cap).
    Lz4,
}

/// Pixels of an image: `stride` u32 per row, row-major xRGB.
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    /// The pixel words.
    pub data: &'a [u32],
    /// Words per row.
    pub stride: usize,
}

impl Pixels<'_> {
    /// Bytes B, G, R, x of the `w` x `h` block at (x, y), rows top first. The caller keeps
    /// the block inside the data.
    fn block_bytes(&self, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h * 4);
        for row in y..y + h {
            let start = row * self.stride + x;
            for p in &self.data[start..start + w] {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        out
    }
}

/// DRAW_COPY messages painting `dest` from `pixels`, where (sx, sy) is the pixel of `pixels`
/// that lands on dest's top-left corner. Images are split into row bands of at most
/// [`BAND_BYTES`]; `next_id` numbers the images. Returns (band rectangle, message) pairs.
pub fn draw_copy(
    dest: Rect,
    pixels: Pixels<'_>,
    (sx, sy): (usize, usize),
    codec: ImageCodec,
    next_id: &mut u64,
) -> Vec<(Rect, OutMsg)> {
    let width = dest.w as usize;
    let rows_per_band = (BAND_BYTES / (width * 4).max(1)).clamp(1, dest.h as usize);
    let mut out = Vec::new();
    let mut row = 0usize;
    while row < dest.h as usize {
        let rows = rows_per_band.min(dest.h as usize - row);
        let raw = pixels.block_bytes(sx, sy + row, width, rows);
        // Both fit: the band lies inside dest, whose edges are i32 and sizes u32.
        let band_y = dest.y + i32::try_from(row).unwrap_or(i32::MAX);
        let band = Rect::new(
            dest.x,
            band_y,
            dest.w,
            u32::try_from(rows).unwrap_or(u32::MAX),
        );
        *next_id += 1;
        out.push((band, draw_copy_band(band, &raw, codec, *next_id)));
        row += rows;
    }
    out
}

/// One DRAW_COPY whose image is the packed rows `raw` of `band`'s size.
fn draw_copy_band(band: Rect, raw: &[u8], codec: ImageCodec, id: u64) -> OutMsg {
    let lz4 = match codec {
        ImageCodec::Lz4 => lz4_payload(raw).filter(|p| p.len() < raw.len()),
        ImageCodec::Bitmap => None,
    };
    let mut w = Writer::with_capacity(93 + raw.len());
    display_base(&mut w, band);
    w.u32(DRAW_COPY_IMAGE_OFFSET);
    w.rect(Rect::new(0, 0, band.w, band.h));
    w.u16(ROPD_OP_PUT).u8(0);
    no_mask(&mut w);
    debug_assert_eq!(w.len(), DRAW_COPY_IMAGE_OFFSET as usize);

    w.u64(id);
    match lz4 {
        Some(payload) => {
            w.u8(IMAGE_TYPE_LZ4).u8(0).u32(band.w).u32(band.h);
            w.u32(len_u32(payload.len())).bytes(&payload);
        }
        None => {
            w.u8(IMAGE_TYPE_BITMAP).u8(0).u32(band.w).u32(band.h);
            w.u8(BITMAP_FMT_32BIT).u8(BITMAP_FLAGS_TOP_DOWN);
            w.u32(band.w).u32(band.h).u32(band.w * 4).u32(0);
            w.bytes(raw);
        }
    }
    OutMsg::new(MSG_DISPLAY_DRAW_COPY, w.finish())
}

/// Bands are bounded by [`BAND_BYTES`], far below u32::MAX.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The SPICE LZ4 payload of packed 32-bit rows: top-down flag, bitmap format, then one LZ4
/// block preceded by its big-endian compressed length (spice-common canvas_get_lz4).
fn lz4_payload(raw: &[u8]) -> Option<Vec<u8>> {
    let block = lz4_flex::block::compress(raw);
    let len = u32::try_from(block.len()).ok()?;
    let mut payload = Vec::with_capacity(6 + block.len());
    payload.push(1);
    payload.push(BITMAP_FMT_32BIT);
    payload.extend_from_slice(&len.to_be_bytes());
    payload.extend_from_slice(&block);
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surface_create_matches_the_reference_example() {
        let msg = surface_create(1024, 768);
        assert_eq!(msg.msg_type, 314);
        let expect = [
            0, 0, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0x20, 0, 0, 0, 1, 0, 0, 0,
        ];
        assert_eq!(msg.body, expect);
        assert_eq!(surface_destroy().body, [0, 0, 0, 0]);
        assert_eq!(mark(), OutMsg::new(102, vec![]));
    }

    #[test]
    fn draw_fill_is_41_bytes() {
        let msg = draw_fill(Rect::new(1, 2, 3, 4), 0x00aa_bbcc);
        assert_eq!(msg.msg_type, 302);
        let mut expect = vec![
            0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0, 4, 0, 0, 0, 0,
        ];
        expect.extend_from_slice(&[1, 0xcc, 0xbb, 0xaa, 0, 8, 0]);
        expect.extend_from_slice(&[0; 13]);
        assert_eq!(msg.body, expect);
    }

    #[test]
    fn copy_bits_is_29_bytes() {
        let msg = copy_bits(5, 6, Rect::new(0, 1, 2, 3));
        assert_eq!(msg.msg_type, 104);
        let expect = [
            0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0,
        ];
        assert_eq!(msg.body, expect);
    }

    /// The worked example of reference section 7.4: a 3x2 bitmap at (10, 20).
    #[test]
    fn draw_copy_bitmap_matches_the_reference_layout() {
        let data: Vec<u32> = (0..6).map(|i| 0x0010_2030 + i).collect();
        let pixels = Pixels {
            data: &data,
            stride: 3,
        };
        let mut id = 0x41;
        let msgs = draw_copy(
            Rect::new(10, 20, 3, 2),
            pixels,
            (0, 0),
            ImageCodec::Bitmap,
            &mut id,
        );
        assert_eq!(msgs.len(), 1);
        let (band, msg) = &msgs[0];
        assert_eq!(*band, Rect::new(10, 20, 3, 2));
        assert_eq!(msg.msg_type, 304);

        let mut expect = vec![
            0, 0, 0, 0, 20, 0, 0, 0, 10, 0, 0, 0, 22, 0, 0, 0, 13, 0, 0, 0, 0,
        ];
        expect.extend_from_slice(&[0x39, 0, 0, 0]);
        expect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        expect.extend_from_slice(&[8, 0, 0]);
        expect.extend_from_slice(&[0; 13]);
        expect.extend_from_slice(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        expect.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0, 0, 8, 4]);
        expect.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0]);
        for p in &data {
            expect.extend_from_slice(&p.to_le_bytes());
        }
        assert_eq!(msg.body.len(), 117);
        assert_eq!(msg.body, expect);
    }

    #[test]
    fn draw_copy_lz4_frames_one_big_endian_block() {
        let data = vec![0x0012_3456u32; 64 * 4];
        let pixels = Pixels {
            data: &data,
            stride: 64,
        };
        let mut id = 0;
        let msgs = draw_copy(
            Rect::new(0, 0, 64, 4),
            pixels,
            (0, 0),
            ImageCodec::Lz4,
            &mut id,
        );
        let body = &msgs[0].1.body;
        assert_eq!(body[65], IMAGE_TYPE_LZ4);
        let data_size = u32::from_le_bytes(body[75..79].try_into().unwrap()) as usize;
        assert_eq!(body.len(), 79 + data_size);
        assert_eq!(&body[79..81], &[1, BITMAP_FMT_32BIT]);
        let block_len = u32::from_be_bytes(body[81..85].try_into().unwrap()) as usize;
        assert_eq!(85 + block_len, body.len());
        let raw = lz4_flex::block::decompress(&body[85..], 64 * 4 * 4).unwrap();
        assert!(raw.chunks(4).all(|p| p == [0x56, 0x34, 0x12, 0]));
    }

    #[test]
    fn incompressible_pixels_fall_back_to_a_bitmap() {
        let data: Vec<u32> = (0..16u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
        let pixels = Pixels {
            data: &data,
            stride: 4,
        };
        let mut id = 0;
        let msgs = draw_copy(
            Rect::new(0, 0, 4, 4),
            pixels,
            (0, 0),
            ImageCodec::Lz4,
            &mut id,
        );
        assert_eq!(msgs[0].1.body[65], IMAGE_TYPE_BITMAP);
    }

    #[test]
    fn large_images_are_split_into_bands() {
        let width = 1024usize;
        let data = vec![0u32; width * 600];
        let pixels = Pixels {
            data: &data,
            stride: width,
        };
        let mut id = 0;
        let dest = Rect::new(0, 0, 1024, 600);
        let msgs = draw_copy(dest, pixels, (0, 0), ImageCodec::Bitmap, &mut id);
        let bands: Vec<Rect> = msgs.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            bands,
            [
                Rect::new(0, 0, 1024, 256),
                Rect::new(0, 256, 1024, 256),
                Rect::new(0, 512, 1024, 88)
            ]
        );
        assert_eq!(id, 3);
    }
}
