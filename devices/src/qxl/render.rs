// SPDX-License-Identifier: Apache-2.0
//! Software rendering into 32-bit surfaces in guest memory: fills, raster operations and
//! copies from bitmaps or surfaces, with nearest-neighbour scaling.
//!
//! Callers pass destination rectangles that are already clipped to the surface and made
//! disjoint. A copy with OP_PUT from 32-bit pixels without scaling (the only thing the Linux
//! driver sends) moves whole rows with one memmove per contiguous piece; everything else goes
//! through a row of 0xAARRGGBB pixels and a per-pixel raster operation.

use super::error::QxlGuestError;
use super::image::{Bitmap, OPAQUE};
use super::memory::{GuestBars, GuestPtr};
use super::rect::Rect;
use super::regs::*;
use super::surface::Surface;

/// The colour bits of a pixel.
const RGB: u32 = 0x00ff_ffff;

/// Returns whether the raster operation reads the destination.
pub fn rop_reads_dest(rop: u16) -> bool {
    if rop & (SPICE_ROPD_OP_BLACKNESS | SPICE_ROPD_OP_WHITENESS) != 0 {
        return false;
    }
    rop & (SPICE_ROPD_OP_INVERS | SPICE_ROPD_OP_OR | SPICE_ROPD_OP_AND | SPICE_ROPD_OP_XOR) != 0
}

/// Combines source pixel `s` and destination pixel `d` (0xAARRGGBB) as the SPICE ROP
/// descriptor `rop` says. Inversions act on the colour bits; the result takes its alpha from
/// the source when the operation reads it, from the destination for OP_INVERS, and is opaque
/// for BLACKNESS and WHITENESS. The brush inversion bit must already be folded into
/// INVERS_SRC by the caller. No operation bit means OP_PUT.
pub fn apply_rop(rop: u16, s: u32, d: u32) -> u32 {
    let s = if rop & SPICE_ROPD_INVERS_SRC != 0 {
        s ^ RGB
    } else {
        s
    };
    let d = if rop & SPICE_ROPD_INVERS_DEST != 0 {
        d ^ RGB
    } else {
        d
    };

    let (rgb, alpha) = if rop & SPICE_ROPD_OP_BLACKNESS != 0 {
        (0, OPAQUE)
    } else if rop & SPICE_ROPD_OP_WHITENESS != 0 {
        (RGB, OPAQUE)
    } else if rop & SPICE_ROPD_OP_INVERS != 0 {
        (!d, d)
    } else if rop & SPICE_ROPD_OP_OR != 0 {
        (s | d, s)
    } else if rop & SPICE_ROPD_OP_AND != 0 {
        (s & d, s)
    } else if rop & SPICE_ROPD_OP_XOR != 0 {
        (s ^ d, s)
    } else {
        (s, s)
    };

    let rgb = if rop & SPICE_ROPD_INVERS_RES != 0 {
        rgb ^ RGB
    } else {
        rgb
    };
    (rgb & RGB) | (alpha & !RGB)
}

/// Where a copy reads its pixels.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A decoded bitmap.
    Bitmap(&'a Bitmap),
    /// A surface; `same` when it is also the destination.
    Surface {
        /// The source surface.
        surface: &'a Surface,
        /// Whether source and destination are one surface.
        same: bool,
    },
}

impl Source<'_> {
    /// The pixels the source has.
    pub fn bounds(&self) -> Rect {
        match self {
            Source::Bitmap(b) => Rect::new(
                0,
                0,
                i32::try_from(b.width).unwrap_or(0),
                i32::try_from(b.height).unwrap_or(0),
            ),
            Source::Surface { surface, .. } => surface.bounds(),
        }
    }

    fn is_same_surface(&self) -> bool {
        matches!(self, Source::Surface { same: true, .. })
    }

    /// Returns whether rows can be copied byte for byte to `dst`: 32-bit pixels whose fourth
    /// byte means the same thing on both sides (or does not matter, on an xRGB destination).
    fn copies_raw_to(&self, dst: &Surface) -> bool {
        match self {
            Source::Bitmap(b) => b.is_raw32() && (!dst.has_alpha() || b.has_alpha()),
            Source::Surface { surface, .. } => !dst.has_alpha() || surface.has_alpha(),
        }
    }

    /// Copies `len` bytes of row `sy` starting at pixel `sx` unchanged to `dst`.
    fn copy_raw(
        &self,
        bars: &GuestBars,
        sx: u32,
        sy: u32,
        dst: GuestPtr,
        len: u64,
    ) -> Result<(), QxlGuestError> {
        match self {
            Source::Bitmap(b) => {
                let start = b.row_offset(sy) + u64::from(sx) * 4;
                b.data.for_each_piece(start, len, |ptr, n, pos| {
                    let from = bars.slice(ptr.bar, ptr.offset, n)?;
                    from.copy_to_volatile_slice(bars.slice(dst.bar, dst.offset + pos, n)?);
                    Ok(())
                })
            }
            Source::Surface { surface, .. } => {
                let ptr = surface.pixel_ptr(sx, sy);
                let from = bars.slice(ptr.bar, ptr.offset, len)?;
                from.copy_to_volatile_slice(bars.slice(dst.bar, dst.offset, len)?);
                Ok(())
            }
        }
    }

    /// Reads pixels `[sx, sx + out.len())` of row `sy` as 0xAARRGGBB.
    fn read_row(
        &self,
        bars: &GuestBars,
        sx: u32,
        sy: u32,
        out: &mut [u32],
        scratch: &mut Vec<u8>,
    ) -> Result<(), QxlGuestError> {
        match self {
            Source::Bitmap(b) => b.read_row(bars, sy, sx, out, scratch),
            Source::Surface { surface, .. } => {
                read_pixels(bars, surface.pixel_ptr(sx, sy), out, scratch)?;
                if !surface.has_alpha() {
                    out.iter_mut().for_each(|p| *p |= OPAQUE);
                }
                Ok(())
            }
        }
    }
}

/// Reads `out.len()` 32-bit pixels at `ptr`.
fn read_pixels(
    bars: &GuestBars,
    ptr: GuestPtr,
    out: &mut [u32],
    scratch: &mut Vec<u8>,
) -> Result<(), QxlGuestError> {
    scratch.resize(out.len() * 4, 0);
    bars.read(ptr, scratch)?;
    for (px, b) in out.iter_mut().zip(scratch.chunks_exact(4)) {
        *px = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Converts `pixels` to little-endian bytes in `bytes` and writes them at `ptr`.
fn write_pixels(
    bars: &GuestBars,
    ptr: GuestPtr,
    pixels: &[u32],
    bytes: &mut Vec<u8>,
) -> Result<(), QxlGuestError> {
    bytes.clear();
    bytes.extend(pixels.iter().flat_map(|p| p.to_le_bytes()));
    bars.write(ptr, bytes)
}

/// Maps destination coordinate `x` of a span starting at `dst_start` to a source coordinate,
/// sampling at pixel centres; spans are `(start, length)` pairs.
fn scale(x: i32, (dst_start, dst_len): (i32, u32), (src_start, src_len): (i32, u32)) -> i32 {
    let d = i64::from(x) - i64::from(dst_start);
    let offset = (2 * d + 1) * i64::from(src_len) / (2 * i64::from(dst_len.max(1)));
    src_start.saturating_add(i32::try_from(offset).unwrap_or(i32::MAX))
}

/// Converts a coordinate that the caller's clipping made non-negative.
fn coord(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// A copy request: where the source area sits and how it maps on the bounding box.
#[derive(Clone, Copy, Debug)]
pub struct CopyOp<'a> {
    /// The source pixels.
    pub src: Source<'a>,
    /// Source rectangle, inside `src.bounds()`.
    pub area: Rect,
    /// Destination rectangle the area maps onto.
    pub bbox: Rect,
    /// SPICE_ROPD_* bits.
    pub rop: u16,
}

impl CopyOp<'_> {
    fn is_scaled(&self) -> bool {
        self.area.width() != self.bbox.width() || self.area.height() != self.bbox.height()
    }

    fn map_x(&self, x: i32) -> i32 {
        let dst = (self.bbox.left, self.bbox.width());
        scale(x, dst, (self.area.left, self.area.width()))
    }

    fn map_y(&self, y: i32) -> i32 {
        let dst = (self.bbox.top, self.bbox.height());
        scale(y, dst, (self.area.top, self.area.height()))
    }
}

/// Reusable row buffers, so rendering allocates nothing per command once warmed up.
#[derive(Debug, Default)]
pub struct Renderer {
    /// Rows copied by memmove so far.
    pub raw_rows: u64,
    src: Vec<u32>,
    dst: Vec<u32>,
    bytes: Vec<u8>,
    scratch: Vec<u8>,
}

impl Renderer {
    /// Paints `rects` of `dst` with `color` (0xAARRGGBB) combined through `rop`.
    pub fn fill(
        &mut self,
        bars: &GuestBars,
        dst: &Surface,
        rects: &[Rect],
        color: u32,
        rop: u16,
    ) -> Result<(), QxlGuestError> {
        let reads_dest = rop_reads_dest(rop);
        let constant = apply_rop(rop, color, 0);
        for r in rects {
            let width = r.width() as usize;
            if !reads_dest {
                self.dst.clear();
                self.dst.resize(width, constant);
                self.bytes.clear();
                self.bytes
                    .extend(self.dst.iter().flat_map(|p| p.to_le_bytes()));
            }

            for y in r.top..r.bottom {
                let ptr = dst.pixel_ptr(coord(r.left), coord(y));
                if !reads_dest {
                    bars.write(ptr, &self.bytes)?;
                    continue;
                }
                self.dst.resize(width, 0);
                read_pixels(bars, ptr, &mut self.dst, &mut self.scratch)?;
                self.dst
                    .iter_mut()
                    .for_each(|d| *d = apply_rop(rop, color, *d));
                write_pixels(bars, ptr, &self.dst, &mut self.bytes)?;
            }
        }
        Ok(())
    }

    /// Copies `op.area` of the source stretched over `op.bbox`, painting only `rects`.
    pub fn copy(
        &mut self,
        bars: &GuestBars,
        dst: &Surface,
        rects: &[Rect],
        op: &CopyOp<'_>,
    ) -> Result<(), QxlGuestError> {
        let raw = op.rop == SPICE_ROPD_OP_PUT && !op.is_scaled() && op.src.copies_raw_to(dst);
        let mut row = |y: i32, r: &Rect| {
            if raw {
                self.raw_rows += 1;
                Self::copy_row_raw(bars, dst, op, y, r)
            } else {
                self.copy_row(bars, dst, op, y, r)
            }
        };

        if op.src.is_same_surface() {
            let dx = op.bbox.left.saturating_sub(op.area.left);
            let dy = op.bbox.top.saturating_sub(op.area.top);
            return for_each_row_ordered(rects, dx, dy, row);
        }
        for r in rects {
            for y in r.top..r.bottom {
                row(y, r)?;
            }
        }
        Ok(())
    }

    /// Row `y` of `r` by memmove.
    fn copy_row_raw(
        bars: &GuestBars,
        dst: &Surface,
        op: &CopyOp<'_>,
        y: i32,
        r: &Rect,
    ) -> Result<(), QxlGuestError> {
        let sx = coord(op.map_x(r.left));
        let sy = coord(op.map_y(y));
        let to = dst.pixel_ptr(coord(r.left), coord(y));
        op.src.copy_raw(bars, sx, sy, to, u64::from(r.width()) * 4)
    }

    /// Row `y` of `r` through 0xAARRGGBB pixels and the raster operation.
    fn copy_row(
        &mut self,
        bars: &GuestBars,
        dst: &Surface,
        op: &CopyOp<'_>,
        y: i32,
        r: &Rect,
    ) -> Result<(), QxlGuestError> {
        let sx0 = op.map_x(r.left);
        let sx1 = op.map_x(r.right - 1);
        let sy = coord(op.map_y(y));
        self.src
            .resize(usize::try_from(sx1 - sx0 + 1).unwrap_or(0), 0);
        op.src
            .read_row(bars, coord(sx0), sy, &mut self.src, &mut self.scratch)?;

        let to = dst.pixel_ptr(coord(r.left), coord(y));
        self.dst.resize(r.width() as usize, 0);
        if rop_reads_dest(op.rop) {
            read_pixels(bars, to, &mut self.dst, &mut self.scratch)?;
        }
        for (x, d) in (r.left..r.right).zip(self.dst.iter_mut()) {
            let index = usize::try_from(op.map_x(x) - sx0).unwrap_or(0);
            let s = self.src.get(index).copied().unwrap_or(OPAQUE);
            *d = apply_rop(op.rop, s, *d);
        }
        write_pixels(bars, to, &self.dst, &mut self.bytes)
    }
}

/// Visits every row of the disjoint `rects` in an order that is safe when the source is the
/// destination moved by `(dx, dy)`: rows bottom-up when moving down, and within a row the
/// rectangles right-to-left when moving right, so no pixel is overwritten before it is read.
///
/// A sweep line keeps the rectangles crossing the current row, sorted by left edge, so the
/// cost is the number of rows plus the number of (row, rectangle) visits.
fn for_each_row_ordered(
    rects: &[Rect],
    dx: i32,
    dy: i32,
    mut f: impl FnMut(i32, &Rect) -> Result<(), QxlGuestError>,
) -> Result<(), QxlGuestError> {
    let down = dy > 0;
    let first_row = |r: &Rect| if down { r.bottom - 1 } else { r.top };
    let mut pending: Vec<Rect> = rects.iter().copied().filter(|r| !r.is_empty()).collect();
    pending.sort_unstable_by_key(|r| {
        if down {
            -i64::from(r.bottom)
        } else {
            i64::from(r.top)
        }
    });
    let (Some(top), Some(bottom)) = (
        pending.iter().map(|r| r.top).min(),
        pending.iter().map(|r| r.bottom).max(),
    ) else {
        return Ok(());
    };

    let mut active: Vec<Rect> = Vec::new();
    let mut next = 0;
    let mut visit = |y: i32| -> Result<(), QxlGuestError> {
        active.retain(|r| r.top <= y && y < r.bottom);
        while let Some(r) = pending.get(next).filter(|r| first_row(r) == y) {
            let at = active.partition_point(|a| (a.left < r.left) != (dx > 0));
            active.insert(at, *r);
            next += 1;
        }
        active.iter().try_for_each(|r| f(y, r))
    };
    if down {
        (top..bottom).rev().try_for_each(&mut visit)
    } else {
        (top..bottom).try_for_each(&mut visit)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vm_memory::mmap::MmapRegion;

    use super::*;
    use crate::qxl::chunk::DataStream;
    use crate::qxl::memory::Bar;
    use crate::qxl::surface::SurfaceInfo;

    const W: u32 = 8;
    const H: u32 = 8;

    fn setup(stride: i32) -> (GuestBars, Surface) {
        let ram = Arc::new(MmapRegion::new(1 << 16).unwrap());
        let vram = Arc::new(MmapRegion::new(1 << 16).unwrap());
        let bars = GuestBars::new(ram, vram);
        let info = SurfaceInfo {
            width: W,
            height: H,
            stride,
            format: SPICE_SURFACE_FMT_32_XRGB,
        };
        let surface = Surface::new(info, GuestPtr::new(Bar::Vram, 0x100), None);
        (bars, surface)
    }

    fn pixel(bars: &GuestBars, s: &Surface, x: u32, y: u32) -> u32 {
        bars.read_u32(s.pixel_ptr(x, y)).unwrap() & RGB
    }

    fn set_pixel(bars: &GuestBars, s: &Surface, x: u32, y: u32, v: u32) {
        bars.write_u32(s.pixel_ptr(x, y), v).unwrap();
    }

    /// Paints pixel (x, y) with x + 16 * y so that moves are easy to check.
    fn paint_pattern(bars: &GuestBars, s: &Surface) {
        for y in 0..H {
            for x in 0..W {
                set_pixel(bars, s, x, y, x + 16 * y);
            }
        }
    }

    fn bitmap(bars: &GuestBars, format: u8, w: u32, h: u32, pixels: &[u32]) -> Bitmap {
        let bytes: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
        let ptr = GuestPtr::new(Bar::Ram, 0x1000);
        bars.write(ptr, &bytes).unwrap();
        Bitmap {
            format,
            top_down: true,
            width: w,
            height: h,
            stride: w * 4,
            palette: Vec::new(),
            data: DataStream::contiguous(ptr, bytes.len() as u64),
        }
    }

    #[test]
    fn every_rop_on_known_pixels() {
        let (s, d) = (0x00f0_cc0f, 0x0033_aa55);
        let cases = [
            (SPICE_ROPD_OP_PUT, s),
            (SPICE_ROPD_OP_OR, s | d),
            (SPICE_ROPD_OP_AND, s & d),
            (SPICE_ROPD_OP_XOR, s ^ d),
            (SPICE_ROPD_OP_BLACKNESS, 0),
            (SPICE_ROPD_OP_WHITENESS, RGB),
            (SPICE_ROPD_OP_INVERS, !d & RGB),
            (SPICE_ROPD_OP_PUT | SPICE_ROPD_INVERS_SRC, !s & RGB),
            (SPICE_ROPD_OP_OR | SPICE_ROPD_INVERS_DEST, (s | !d) & RGB),
            (SPICE_ROPD_OP_AND | SPICE_ROPD_INVERS_RES, !(s & d) & RGB),
            (SPICE_ROPD_OP_XOR | SPICE_ROPD_INVERS_SRC, (!s ^ d) & RGB),
            (0, s),
        ];
        for (rop, want) in cases {
            assert_eq!(apply_rop(rop, OPAQUE | s, d) & RGB, want, "rop {rop:#x}");
        }
        assert_eq!(apply_rop(SPICE_ROPD_OP_PUT, 0x1200_0000, 0) >> 24, 0x12);
        assert_eq!(apply_rop(SPICE_ROPD_OP_INVERS, 0, 0x3400_0000) >> 24, 0x34);
        assert_eq!(apply_rop(SPICE_ROPD_OP_WHITENESS, 0, 0), 0xffff_ffff);
    }

    #[test]
    fn fill_paints_only_the_rects() {
        for stride in [32, -32, 40] {
            let (bars, s) = setup(stride);
            let rects = [Rect::new(1, 1, 3, 2), Rect::new(5, 6, 8, 8)];
            let mut renderer = Renderer::default();

            renderer
                .fill(&bars, &s, &rects, 0xabcdef, SPICE_ROPD_OP_PUT)
                .unwrap();

            for y in 0..H {
                for x in 0..W {
                    let inside = (1..3).contains(&x) && y == 1 || x >= 5 && y >= 6;
                    let want = if inside { 0xabcdef } else { 0 };
                    assert_eq!(pixel(&bars, &s, x, y), want, "({x},{y}) stride {stride}");
                }
            }
        }
    }

    #[test]
    fn fill_with_dest_rops() {
        let (bars, s) = setup(32);
        set_pixel(&bars, &s, 0, 0, 0x0f0f0f);
        let r = [Rect::new(0, 0, 1, 1)];
        let mut renderer = Renderer::default();

        renderer
            .fill(&bars, &s, &r, 0xff00ff, SPICE_ROPD_OP_XOR)
            .unwrap();
        assert_eq!(pixel(&bars, &s, 0, 0), 0xf00ff0);
        renderer
            .fill(&bars, &s, &r, 0, SPICE_ROPD_OP_INVERS)
            .unwrap();
        assert_eq!(pixel(&bars, &s, 0, 0), 0x0ff00f);
        renderer
            .fill(&bars, &s, &r, 0, SPICE_ROPD_OP_WHITENESS)
            .unwrap();
        assert_eq!(pixel(&bars, &s, 0, 0), 0xffffff);
    }

    #[test]
    fn raw_and_rop_copies_agree() {
        let (bars, s) = setup(-32);
        let pixels: Vec<u32> = (0..16).map(|i| 0x010101 * i).collect();
        let b = bitmap(&bars, SPICE_BITMAP_FMT_32BIT, 4, 4, &pixels);
        let mut renderer = Renderer::default();

        for (rop, x0) in [(SPICE_ROPD_OP_PUT, 0), (SPICE_ROPD_OP_OR, 4)] {
            let bbox = Rect::new(x0, 2, x0 + 4, 6);
            let op = CopyOp {
                src: Source::Bitmap(&b),
                area: Rect::new(0, 0, 4, 4),
                bbox,
                rop,
            };
            renderer.copy(&bars, &s, &[bbox], &op).unwrap();
        }

        for y in 0..4 {
            for x in 0..4 {
                let want = 0x010101 * (x + 4 * y);
                assert_eq!(pixel(&bars, &s, x, y + 2), want);
                assert_eq!(pixel(&bars, &s, x + 4, y + 2), want);
            }
        }
        assert_eq!(pixel(&bars, &s, 0, 1), 0);
    }

    #[test]
    fn scaled_copy_uses_nearest_pixels() {
        let (bars, s) = setup(32);
        let b = bitmap(&bars, SPICE_BITMAP_FMT_32BIT, 2, 2, &[1, 2, 3, 4]);
        let bbox = Rect::new(0, 0, 4, 4);
        let op = CopyOp {
            src: Source::Bitmap(&b),
            area: Rect::new(0, 0, 2, 2),
            bbox,
            rop: SPICE_ROPD_OP_PUT,
        };
        Renderer::default().copy(&bars, &s, &[bbox], &op).unwrap();

        let rows: Vec<Vec<u32>> = (0..4)
            .map(|y| (0..4).map(|x| pixel(&bars, &s, x, y)).collect())
            .collect();
        assert_eq!(
            rows,
            [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
        );
    }

    /// Moves a 4x4 block by (dx, dy) inside the surface and checks every pixel.
    fn check_overlapping_move(dx: i32, dy: i32, rects: &[Rect]) {
        let (bars, s) = setup(32);
        paint_pattern(&bars, &s);
        let area = Rect::new(2, 2, 6, 6);
        let bbox = area.translate(dx, dy).unwrap();
        let op = CopyOp {
            src: Source::Surface {
                surface: &s,
                same: true,
            },
            area,
            bbox,
            rop: SPICE_ROPD_OP_PUT,
        };
        Renderer::default().copy(&bars, &s, rects, &op).unwrap();

        for y in 0..H {
            for x in 0..W {
                let (xi, yi) = (i32::try_from(x).unwrap(), i32::try_from(y).unwrap());
                let want = if bbox.contains(&Rect::new(xi, yi, xi + 1, yi + 1)) {
                    coord(xi - dx) + 16 * coord(yi - dy)
                } else {
                    x + 16 * y
                };
                assert_eq!(pixel(&bars, &s, x, y), want, "({x},{y}) move ({dx},{dy})");
            }
        }
    }

    #[test]
    fn overlapping_moves_in_every_direction() {
        for (dx, dy) in [(1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-2, -1), (2, -1)] {
            let bbox = Rect::new(2 + dx, 2 + dy, 6 + dx, 6 + dy);
            check_overlapping_move(dx, dy, &[bbox]);
            let mid = 4 + dx;
            let halves = [
                Rect::new(bbox.left, bbox.top, mid, bbox.bottom),
                Rect::new(mid, bbox.top, bbox.right, bbox.bottom),
            ];
            check_overlapping_move(dx, dy, &halves);
        }
    }
}
