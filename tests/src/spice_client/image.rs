// SPDX-License-Identifier: Apache-2.0
//! SPICE images (the `Image` a draw message points at): raw bitmaps in every format a palette
//! or a plain pixel can express, LZ4, references to the image cache and to other surfaces.
//! QUIC, LZ, GLZ and JPEG are not decoded: they are reported as unsupported, so a test sees
//! why a screen cannot be rebuilt instead of a wrong picture.

use super::canvas::Pixmap;
use super::wire::Bytes;
use super::ClientError;

/// SPICE_IMAGE_TYPE_* numbers.
pub mod kind {
    /// Raw pixels (BitmapData).
    pub const BITMAP: u8 = 0;
    /// The SPICE QUIC codec.
    pub const QUIC: u8 = 1;
    /// The descriptor only: the pixels are in the client's cache.
    pub const FROM_CACHE: u8 = 103;
    /// Another surface of the client.
    pub const SURFACE: u8 = 104;
    /// Like FROM_CACHE, for a lossless copy.
    pub const FROM_CACHE_LOSSLESS: u8 = 106;
    /// u32 size, then a u8 top-down flag, a u8 bitmap format and big-endian-length LZ4 blocks.
    pub const LZ4: u8 = 109;
}

/// SPICE_IMAGE_FLAGS_CACHE_ME: store the decoded image under its id.
pub const FLAG_CACHE_ME: u8 = 1;

/// SPICE_BITMAP_FMT_* numbers.
pub mod format {
    /// 1 bit per pixel, palette, least significant bit first.
    pub const ONE_BIT_LE: u8 = 1;
    /// 1 bit per pixel, palette, most significant bit first.
    pub const ONE_BIT_BE: u8 = 2;
    /// 4 bits per pixel, palette, low nibble first.
    pub const FOUR_BIT_LE: u8 = 3;
    /// 4 bits per pixel, palette, high nibble first.
    pub const FOUR_BIT_BE: u8 = 4;
    /// 8 bits per pixel, palette.
    pub const EIGHT_BIT: u8 = 5;
    /// x1r5g5b5, little-endian.
    pub const SIXTEEN_BIT: u8 = 6;
    /// Bytes B, G, R.
    pub const TWENTY_FOUR_BIT: u8 = 7;
    /// Bytes B, G, R, x.
    pub const THIRTY_TWO_BIT: u8 = 8;
    /// Bytes B, G, R, A.
    pub const RGBA: u8 = 9;
}

/// SPICE_BITMAP_FLAGS_PAL_FROM_CACHE: the palette field is a cache id, not a pointer.
const BITMAP_PAL_FROM_CACHE: u8 = 2;
/// SPICE_BITMAP_FLAGS_TOP_DOWN: the first row is the top one.
const BITMAP_TOP_DOWN: u8 = 4;

/// Largest image accepted, in pixels (64 MiB of pixels), so a claimed size cannot make the
/// client allocate without bound.
pub const MAX_IMAGE_PIXELS: u64 = 16 << 20;

/// The fixed part of every image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageDescriptor {
    /// Cache key.
    pub id: u64,
    /// SPICE_IMAGE_TYPE_*.
    pub kind: u8,
    /// SPICE_IMAGE_FLAGS_*.
    pub flags: u8,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// What an image pointer leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Image {
    /// Pixels decoded from the message.
    Pixels(Pixmap),
    /// The cached image with this id.
    FromCache(u64),
    /// The client surface with this id.
    Surface(u32),
}

/// Parses the image at byte `offset` of the message `body`.
pub fn parse_image(body: &[u8], offset: u32) -> Result<(ImageDescriptor, Image), ClientError> {
    let mut bytes = Bytes::at(body, offset, "image")?;
    let desc = ImageDescriptor {
        id: bytes.u64()?,
        kind: bytes.u8()?,
        flags: bytes.u8()?,
        width: bytes.u32()?,
        height: bytes.u32()?,
    };

    let image = match desc.kind {
        kind::BITMAP => Image::Pixels(decode_bitmap(body, &mut bytes)?),
        kind::LZ4 => Image::Pixels(decode_lz4(&desc, &mut bytes)?),
        kind::FROM_CACHE | kind::FROM_CACHE_LOSSLESS => Image::FromCache(desc.id),
        kind::SURFACE => Image::Surface(bytes.u32()?),
        other => {
            return Err(ClientError::Unsupported(format!(
                "image type {other} ({}), {}x{}",
                kind_name(other),
                desc.width,
                desc.height
            )))
        }
    };
    Ok((desc, image))
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        kind::QUIC => "QUIC",
        100 => "LZ_PLT",
        101 => "LZ_RGB",
        102 => "GLZ_RGB",
        105 => "JPEG",
        107 => "ZLIB_GLZ_RGB",
        108 => "JPEG_ALPHA",
        _ => "unknown",
    }
}

/// Checks a claimed image size and returns its pixel count.
fn checked_pixels(width: u32, height: u32) -> Result<usize, ClientError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_IMAGE_PIXELS {
        return Err(ClientError::Protocol(format!(
            "image of {width}x{height} pixels exceeds the {MAX_IMAGE_PIXELS}-pixel limit"
        )));
    }
    Ok(usize::try_from(pixels).expect("bounded by MAX_IMAGE_PIXELS"))
}

/// Decodes BitmapData: format, flags, x, y, stride, palette, then stride * y bytes of rows.
fn decode_bitmap(body: &[u8], bytes: &mut Bytes) -> Result<Pixmap, ClientError> {
    let format = bytes.u8()?;
    let flags = bytes.u8()?;
    let width = bytes.u32()?;
    let height = bytes.u32()?;
    let stride = bytes.u32()?;
    if flags & BITMAP_PAL_FROM_CACHE != 0 {
        return Err(ClientError::Unsupported(
            "bitmap with a cached palette".into(),
        ));
    }
    let palette_offset = bytes.u32()?;

    checked_pixels(width, height)?;
    let data_len = u64::from(stride) * u64::from(height);
    let data = bytes.take(usize::try_from(data_len).unwrap_or(usize::MAX))?;
    let bits = u64::from(bits_per_pixel(format)?);
    if u64::from(width) * bits > u64::from(stride) * 8 {
        return Err(ClientError::Protocol(format!(
            "bitmap stride {stride} is too small for {width} pixels of {bits} bits"
        )));
    }

    let palette = match palette_offset {
        0 => Vec::new(),
        offset => parse_palette(body, offset)?,
    };
    let rows = Rows {
        data,
        stride: usize::try_from(stride).expect("u32 fits usize"),
        top_down: flags & BITMAP_TOP_DOWN != 0,
    };
    to_pixmap(format, width, height, &rows, &palette)
}

/// Bits per pixel of a bitmap format this client decodes.
fn bits_per_pixel(format: u8) -> Result<u32, ClientError> {
    match format {
        format::ONE_BIT_LE | format::ONE_BIT_BE => Ok(1),
        format::FOUR_BIT_LE | format::FOUR_BIT_BE => Ok(4),
        format::EIGHT_BIT => Ok(8),
        format::SIXTEEN_BIT => Ok(16),
        format::TWENTY_FOUR_BIT => Ok(24),
        format::THIRTY_TWO_BIT | format::RGBA => Ok(32),
        other => Err(ClientError::Unsupported(format!("bitmap format {other}"))),
    }
}

/// Palette: u64 unique, u16 num_ents, then num_ents xRGB u32 entries.
fn parse_palette(body: &[u8], offset: u32) -> Result<Vec<u32>, ClientError> {
    let mut bytes = Bytes::at(body, offset, "palette")?;
    let _unique = bytes.u64()?;
    let count = bytes.u16()?;
    (0..count).map(|_| bytes.u32()).collect()
}

/// Pixel rows in a byte buffer.
struct Rows<'a> {
    data: &'a [u8],
    stride: usize,
    top_down: bool,
}

impl Rows<'_> {
    /// The bytes of image row `y` (0 = top), whatever the storage order.
    fn row(&self, y: usize, height: usize) -> &[u8] {
        let stored = if self.top_down { y } else { height - 1 - y };
        &self.data[stored * self.stride..(stored + 1) * self.stride]
    }
}

/// Converts rows of `format` pixels to 0xAARRGGBB (alpha 0 except for RGBA).
fn to_pixmap(
    format: u8,
    width: u32,
    height: u32,
    rows: &Rows,
    palette: &[u32],
) -> Result<Pixmap, ClientError> {
    let mut pixmap = Pixmap::new(width, height);
    let w = usize::try_from(width).expect("u32 fits usize");
    let h = usize::try_from(height).expect("u32 fits usize");
    for y in 0..h {
        let row = rows.row(y, h);
        let out = &mut pixmap.pixels[y * w..(y + 1) * w];
        for (x, pixel) in out.iter_mut().enumerate() {
            *pixel = decode_pixel(format, row, x, palette)?;
        }
    }
    Ok(pixmap)
}

/// Pixel `x` of `row`; the caller has checked that the row holds `x`.
fn decode_pixel(format: u8, row: &[u8], x: usize, palette: &[u32]) -> Result<u32, ClientError> {
    let rgb = |b: u8, g: u8, r: u8| u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b);
    let index = match format {
        format::THIRTY_TWO_BIT => return Ok(rgb(row[4 * x], row[4 * x + 1], row[4 * x + 2])),
        format::RGBA => {
            return Ok(u32::from_le_bytes(
                row[4 * x..4 * x + 4].try_into().unwrap(),
            ))
        }
        format::TWENTY_FOUR_BIT => return Ok(rgb(row[3 * x], row[3 * x + 1], row[3 * x + 2])),
        format::SIXTEEN_BIT => return Ok(x555(u16::from_le_bytes([row[2 * x], row[2 * x + 1]]))),
        format::EIGHT_BIT => row[x],
        format::FOUR_BIT_BE => (row[x / 2] >> if x % 2 == 0 { 4 } else { 0 }) & 0xf,
        format::FOUR_BIT_LE => (row[x / 2] >> if x % 2 == 0 { 0 } else { 4 }) & 0xf,
        format::ONE_BIT_BE => (row[x / 8] >> (7 - x % 8)) & 1,
        format::ONE_BIT_LE => (row[x / 8] >> (x % 8)) & 1,
        other => return Err(ClientError::Unsupported(format!("bitmap format {other}"))),
    };
    palette
        .get(usize::from(index))
        .map(|color| color & 0x00ff_ffff)
        .ok_or_else(|| {
            ClientError::Protocol(format!(
                "palette index {index} with {} palette entries",
                palette.len()
            ))
        })
}

/// x1r5g5b5 to 8-bit channels, repeating each channel's top bits in its low bits.
fn x555(v: u16) -> u32 {
    let expand = |c: u16| {
        let c = u32::from(c & 0x1f);
        c << 3 | c >> 2
    };
    expand(v >> 10) << 16 | expand(v >> 5) << 8 | expand(v)
}

/// LZ4 image: u32 data_size; data = u8 top_down, u8 format, then blocks of u32 big-endian
/// length + LZ4 block, decoded back to back (a block may refer to earlier output).
fn decode_lz4(desc: &ImageDescriptor, bytes: &mut Bytes) -> Result<Pixmap, ClientError> {
    let size = bytes.u32()?;
    let data = bytes.take(usize::try_from(size).unwrap_or(usize::MAX))?;
    let mut data = Bytes::new(data, "LZ4 image");
    let top_down = data.u8()? != 0;
    let format = data.u8()?;
    let bpp = match format {
        format::SIXTEEN_BIT => 2,
        format::TWENTY_FOUR_BIT => 3,
        format::THIRTY_TWO_BIT | format::RGBA => 4,
        other => {
            return Err(ClientError::Unsupported(format!(
                "LZ4 image of format {other}"
            )))
        }
    };

    let pixels = checked_pixels(desc.width, desc.height)?;
    let raw = lz4_blocks(&mut data, pixels * bpp)?;
    let rows = Rows {
        data: &raw,
        stride: usize::try_from(desc.width).expect("u32 fits usize") * bpp,
        top_down,
    };
    to_pixmap(format, desc.width, desc.height, &rows, &[])
}

/// Decodes LZ4 blocks until `data` ends; their output must fill exactly `len` bytes.
fn lz4_blocks(data: &mut Bytes, len: usize) -> Result<Vec<u8>, ClientError> {
    /// LZ4 matches reach back at most 64 KiB.
    const WINDOW: usize = 64 << 10;

    let mut out = vec![0u8; len];
    let mut done = 0;
    while data.remaining() > 0 {
        let block_len = u32::from_be_bytes(data.take(4)?.try_into().expect("4 bytes"));
        let block = data.take(usize::try_from(block_len).unwrap_or(usize::MAX))?;
        let (before, after) = out.split_at_mut(done);
        let dict = &before[done.saturating_sub(WINDOW)..];
        done += lz4_flex::block::decompress_into_with_dict(block, after, dict)
            .map_err(|e| ClientError::Protocol(format!("LZ4 block at output {done}: {e}")))?;
    }

    if done != len {
        return Err(ClientError::Protocol(format!(
            "LZ4 image decoded to {done} bytes, want {len}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image of `kind` with descriptor id 0x1234 and no flags, followed by `payload`,
    /// placed at offset 3 of the message.
    fn message(kind: u8, width: u32, height: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0xaa; 3];
        body.extend_from_slice(&0x1234u64.to_le_bytes());
        body.extend_from_slice(&[kind, 0]);
        body.extend_from_slice(&width.to_le_bytes());
        body.extend_from_slice(&height.to_le_bytes());
        body.extend_from_slice(payload);
        body
    }

    fn bitmap(format: u8, flags: u8, size: (u32, u32), stride: u32, palette: u32) -> Vec<u8> {
        let mut out = vec![format, flags];
        for w in [size.0, size.1, stride, palette] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn decode(body: &[u8]) -> Pixmap {
        match parse_image(body, 3).unwrap().1 {
            Image::Pixels(p) => p,
            other => panic!("not pixels: {other:?}"),
        }
    }

    #[test]
    fn bitmap_32bit_top_down() {
        let mut payload = bitmap(format::THIRTY_TWO_BIT, BITMAP_TOP_DOWN, (2, 2), 12, 0);
        payload.extend_from_slice(&[1, 2, 3, 0xff, 4, 5, 6, 0, 9, 9, 9, 9]);
        payload.extend_from_slice(&[7, 8, 9, 0, 0xa, 0xb, 0xc, 0, 9, 9, 9, 9]);
        let p = decode(&message(kind::BITMAP, 2, 2, &payload));

        assert_eq!((p.width, p.height), (2, 2));
        assert_eq!(p.pixels, [0x030201, 0x060504, 0x090807, 0x0c0b0a]);
    }

    #[test]
    fn bitmap_32bit_bottom_up() {
        let mut payload = bitmap(format::THIRTY_TWO_BIT, 0, (1, 3), 4, 0);
        payload.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);

        assert_eq!(
            decode(&message(kind::BITMAP, 1, 3, &payload)).pixels,
            [3, 2, 1]
        );
    }

    #[test]
    fn bitmap_rgba_24_and_16_bit() {
        let mut payload = bitmap(format::RGBA, BITMAP_TOP_DOWN, (1, 1), 4, 0);
        payload.extend_from_slice(&[1, 2, 3, 0x80]);
        assert_eq!(decode(&message(0, 1, 1, &payload)).pixels, [0x80030201]);

        let mut payload = bitmap(format::TWENTY_FOUR_BIT, BITMAP_TOP_DOWN, (2, 1), 8, 0);
        payload.extend_from_slice(&[1, 2, 3, 4, 5, 6, 0, 0]);
        assert_eq!(
            decode(&message(0, 2, 1, &payload)).pixels,
            [0x030201, 0x060504]
        );

        // x1r5g5b5: red 31, green 1, blue 16 -> ff, 08, 84.
        let v: u16 = 31 << 10 | 1 << 5 | 16;
        let mut payload = bitmap(format::SIXTEEN_BIT, BITMAP_TOP_DOWN, (1, 1), 2, 0);
        payload.extend_from_slice(&v.to_le_bytes());
        assert_eq!(decode(&message(0, 1, 1, &payload)).pixels, [0xff0884]);
    }

    /// A palette bitmap whose palette follows the rows; returns the message body.
    fn palette_bitmap(format: u8, width: u32, rows: &[u8], colors: &[u32]) -> Vec<u8> {
        let header = 3 + 18 + 18;
        let palette_at = u32::try_from(header + rows.len()).unwrap();
        let stride = u32::try_from(rows.len()).unwrap();
        let mut payload = bitmap(format, BITMAP_TOP_DOWN, (width, 1), stride, palette_at);
        payload.extend_from_slice(rows);
        payload.extend_from_slice(&77u64.to_le_bytes());
        payload.extend_from_slice(&u16::try_from(colors.len()).unwrap().to_le_bytes());
        for c in colors {
            payload.extend_from_slice(&c.to_le_bytes());
        }
        message(kind::BITMAP, width, 1, &payload)
    }

    #[test]
    fn palette_bitmaps_of_1_4_and_8_bits() {
        let colors = [0x000000, 0xff0000, 0x00ff00, 0x0000ff];
        let p = decode(&palette_bitmap(format::EIGHT_BIT, 3, &[3, 1, 2], &colors));
        assert_eq!(p.pixels, [0x0000ff, 0xff0000, 0x00ff00]);

        let p = decode(&palette_bitmap(
            format::FOUR_BIT_BE,
            3,
            &[0x12, 0x30],
            &colors,
        ));
        assert_eq!(p.pixels, [0xff0000, 0x00ff00, 0x0000ff]);
        let p = decode(&palette_bitmap(
            format::FOUR_BIT_LE,
            3,
            &[0x12, 0x03],
            &colors,
        ));
        assert_eq!(p.pixels, [0x00ff00, 0xff0000, 0x0000ff]);

        let p = decode(&palette_bitmap(
            format::ONE_BIT_BE,
            9,
            &[0b1010_0000, 0x80],
            &colors,
        ));
        assert_eq!(p.pixels[..4], [0xff0000, 0, 0xff0000, 0]);
        assert_eq!(p.pixels[8], 0xff0000);
        let p = decode(&palette_bitmap(
            format::ONE_BIT_LE,
            9,
            &[0b0000_0101, 0x01],
            &colors,
        ));
        assert_eq!(p.pixels[..4], [0xff0000, 0, 0xff0000, 0]);
        assert_eq!(p.pixels[8], 0xff0000);
    }

    #[test]
    fn palette_index_out_of_range_is_an_error() {
        let body = palette_bitmap(format::EIGHT_BIT, 1, &[5], &[0, 1]);
        let err = parse_image(&body, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol violation: palette index 5 with 2 palette entries"
        );
    }

    #[test]
    fn bitmap_rows_past_the_message_end_are_an_error() {
        let mut payload = bitmap(format::THIRTY_TWO_BIT, BITMAP_TOP_DOWN, (2, 2), 8, 0);
        payload.extend_from_slice(&[0; 15]);
        let err = parse_image(&message(0, 2, 2, &payload), 3).unwrap_err();
        assert!(err.to_string().contains("needs 16 bytes"), "{err}");

        let payload = bitmap(format::THIRTY_TWO_BIT, 0, (0x10000, 0x10000), 0, 0);
        let err = parse_image(&message(0, 1, 1, &payload), 3).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");

        let mut payload = bitmap(format::THIRTY_TWO_BIT, 0, (3, 1), 8, 0);
        payload.extend_from_slice(&[0; 8]);
        let err = parse_image(&message(0, 3, 1, &payload), 3).unwrap_err();
        assert!(err.to_string().contains("stride 8 is too small"), "{err}");
    }

    /// An LZ4 image payload: `rows` compressed as `blocks` streaming blocks (each later
    /// block compressed against everything before it).
    fn lz4_payload(format: u8, top_down: bool, rows: &[u8], blocks: usize) -> Vec<u8> {
        let mut data = vec![u8::from(top_down), format];
        let step = rows.len().div_ceil(blocks);
        for start in (0..rows.len()).step_by(step) {
            let end = (start + step).min(rows.len());
            let block = lz4_flex::block::compress_with_dict(&rows[start..end], &rows[..start]);
            data.extend_from_slice(&u32::try_from(block.len()).unwrap().to_be_bytes());
            data.extend_from_slice(&block);
        }
        let mut payload = u32::try_from(data.len()).unwrap().to_le_bytes().to_vec();
        payload.extend_from_slice(&data);
        payload
    }

    #[test]
    fn lz4_32bit_in_dependent_blocks() {
        // 16x8 pixels of a repeating pattern, so later blocks refer back to earlier ones.
        let pixels: Vec<u32> = (0..128u32).map(|i| (i % 5) * 0x010203).collect();
        let rows: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        let body = message(
            kind::LZ4,
            16,
            8,
            &lz4_payload(format::THIRTY_TWO_BIT, true, &rows, 3),
        );

        assert_eq!(decode(&body).pixels, pixels);
    }

    #[test]
    fn lz4_24bit_bottom_up() {
        let rows = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let body = message(
            kind::LZ4,
            2,
            2,
            &lz4_payload(format::TWENTY_FOUR_BIT, false, &rows, 1),
        );

        assert_eq!(
            decode(&body).pixels,
            [0x090807, 0x0c0b0a, 0x030201, 0x060504]
        );
    }

    #[test]
    fn lz4_short_or_corrupt_output_is_an_error() {
        let rows = [7u8; 12];
        let body = message(
            kind::LZ4,
            2,
            2,
            &lz4_payload(format::THIRTY_TWO_BIT, true, &rows, 1),
        );
        let err = parse_image(&body, 3).unwrap_err();
        assert!(
            err.to_string().contains("decoded to 12 bytes, want 16"),
            "{err}"
        );

        let mut payload = lz4_payload(format::THIRTY_TWO_BIT, true, &[7u8; 16], 1);
        let last = payload.len() - 1;
        payload[10..=last].fill(0xff);
        let err = parse_image(&message(kind::LZ4, 2, 2, &payload), 3).unwrap_err();
        assert!(err.to_string().contains("LZ4 block"), "{err}");
    }

    #[test]
    fn cache_and_surface_references() {
        let (desc, image) = parse_image(&message(kind::FROM_CACHE, 4, 4, &[]), 3).unwrap();
        assert_eq!(desc.id, 0x1234);
        assert_eq!(image, Image::FromCache(0x1234));

        let (_, image) = parse_image(&message(kind::SURFACE, 4, 4, &[5, 0, 0, 0]), 3).unwrap();
        assert_eq!(image, Image::Surface(5));
    }

    #[test]
    fn quic_and_glz_are_reported_unsupported() {
        let err = parse_image(&message(kind::QUIC, 4, 4, &[0; 8]), 3).unwrap_err();
        assert!(matches!(err, ClientError::Unsupported(_)));
        assert_eq!(err.to_string(), "unsupported: image type 1 (QUIC), 4x4");

        let err = parse_image(&message(102, 4, 4, &[0; 8]), 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported: image type 102 (GLZ_RGB), 4x4"
        );
    }
}
