// SPDX-License-Identifier: Apache-2.0
//! Executes a parsed QXLDrawable: resolves its surfaces and source image, clips it, and hands
//! disjoint destination rectangles to the renderer.

use super::command::{read_clip_rects, Brush, CopySource, DrawBody, Drawable};
use super::error::QxlGuestError;
use super::image::{parse_image, ImageSource, OPAQUE};
use super::memory::GuestBars;
use super::memslot::MemSlots;
use super::rect::{disjoint_rects, Rect};
use super::regs::*;
use super::render::{CopyOp, Renderer, Source};
use super::surface::{Surface, Surfaces};

/// Most disjoint rectangles a clip list may turn into (16 bytes each).
const MAX_DISJOINT_RECTS: usize = 65536;

/// What became of a drawable that was not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrawOutcome {
    /// Rendered; the bounding box of the pixels written, if any.
    Drawn(Option<Rect>),
    /// A draw type, brush or effect the engine does not render.
    Unsupported,
}

/// Everything a drawable may touch.
pub struct DrawContext<'a> {
    /// Guest memory.
    pub bars: &'a GuestBars,
    /// Address translation.
    pub slots: &'a MemSlots,
    /// Destination and source surfaces.
    pub surfaces: &'a Surfaces,
    /// Row buffers.
    pub renderer: &'a mut Renderer,
}

impl DrawContext<'_> {
    /// Renders `d`.
    pub fn draw(&mut self, d: &Drawable) -> Result<DrawOutcome, QxlGuestError> {
        if let DrawBody::Unsupported(_) = d.body {
            return Ok(DrawOutcome::Unsupported);
        }
        let dst = self.surfaces.get(d.surface_id)?;
        if !d.bbox.is_ordered() {
            return Err(QxlGuestError::BadRect(d.bbox));
        }

        let rects = self.clip(d, dst)?;
        if rects.is_empty() {
            return Ok(DrawOutcome::Drawn(None));
        }
        match d.body {
            DrawBody::Fill { brush, rop } => return self.fill(dst, &rects, brush, rop),
            DrawBody::Copy { src, rop } => self.copy(d, dst, &rects, src, rop)?,
            DrawBody::CopyBits { x, y } => return self.copy_bits(d, dst, &rects, x, y),
            DrawBody::Rop(rop) => self.renderer.fill(self.bars, dst, &rects, 0, rop)?,
            DrawBody::Nop | DrawBody::Unsupported(_) => return Ok(DrawOutcome::Drawn(None)),
        }
        Ok(DrawOutcome::Drawn(bounding_box(&rects)))
    }

    /// The disjoint parts of the clip region inside the bounding box and the surface.
    fn clip(&self, d: &Drawable, dst: &Surface) -> Result<Vec<Rect>, QxlGuestError> {
        let Some(area) = d.bbox.intersect(&dst.bounds()) else {
            return Ok(Vec::new());
        };
        let clip = match d.clip_type {
            SPICE_CLIP_TYPE_NONE => vec![area],
            SPICE_CLIP_TYPE_RECTS => read_clip_rects(self.bars, self.slots, d.clip_data)?
                .iter()
                .filter_map(|r| r.intersect(&area))
                .collect(),
            other => return Err(QxlGuestError::BadClipType(other)),
        };

        disjoint_rects(&clip, MAX_DISJOINT_RECTS).ok_or(QxlGuestError::ClipTooComplex)
    }

    fn fill(
        &mut self,
        dst: &Surface,
        rects: &[Rect],
        brush: Brush,
        rop: u16,
    ) -> Result<DrawOutcome, QxlGuestError> {
        let color = match brush {
            Brush::Solid(c) => OPAQUE | c,
            Brush::None => return Ok(DrawOutcome::Drawn(None)),
            Brush::Pattern => return Ok(DrawOutcome::Unsupported),
            Brush::Unknown(t) => return Err(QxlGuestError::UnsupportedBrush(t)),
        };
        // The brush is the source of a fill: its inversion bit becomes the source's.
        let mut rop = rop & !SPICE_ROPD_INVERS_SRC;
        if rop & SPICE_ROPD_INVERS_BRUSH != 0 {
            rop = (rop & !SPICE_ROPD_INVERS_BRUSH) | SPICE_ROPD_INVERS_SRC;
        }

        self.renderer.fill(self.bars, dst, rects, color, rop)?;
        Ok(DrawOutcome::Drawn(bounding_box(rects)))
    }

    fn copy(
        &mut self,
        d: &Drawable,
        dst: &Surface,
        rects: &[Rect],
        src: CopySource,
        rop: u16,
    ) -> Result<(), QxlGuestError> {
        let image = parse_image(self.bars, self.slots, src.image)?;
        let source = match &image {
            ImageSource::Bitmap(b) => Source::Bitmap(b),
            ImageSource::Surface(id) => Source::Surface {
                surface: self.surfaces.get(*id)?,
                same: *id == d.surface_id,
            },
        };
        if src.area.is_empty() || !source.bounds().contains(&src.area) {
            return Err(QxlGuestError::BadRect(src.area));
        }

        let rop = rop & !SPICE_ROPD_INVERS_BRUSH;
        let op = CopyOp {
            src: source,
            area: src.area,
            bbox: d.bbox,
            rop,
        };
        self.renderer.copy(self.bars, dst, rects, &op)
    }

    /// Moves pixels inside `dst`: the bounding box's content comes from `(x, y)`. Parts whose
    /// source lies outside the surface are left alone.
    fn copy_bits(
        &mut self,
        d: &Drawable,
        dst: &Surface,
        rects: &[Rect],
        x: i32,
        y: i32,
    ) -> Result<DrawOutcome, QxlGuestError> {
        let bad = QxlGuestError::BadRect(d.bbox);
        let dx = x.checked_sub(d.bbox.left).ok_or(bad.clone())?;
        let dy = y.checked_sub(d.bbox.top).ok_or(bad.clone())?;
        let area = d.bbox.translate(dx, dy).ok_or(bad)?;

        let bounds = dst.bounds();
        let rects: Vec<Rect> = rects
            .iter()
            .filter_map(|r| {
                let src = r.translate(dx, dy)?.intersect(&bounds)?;
                src.translate(dx.checked_neg()?, dy.checked_neg()?)
            })
            .collect();
        let op = CopyOp {
            src: Source::Surface {
                surface: dst,
                same: true,
            },
            area,
            bbox: d.bbox,
            rop: SPICE_ROPD_OP_PUT,
        };

        self.renderer.copy(self.bars, dst, &rects, &op)?;
        Ok(DrawOutcome::Drawn(bounding_box(&rects)))
    }
}

fn bounding_box(rects: &[Rect]) -> Option<Rect> {
    let first = *rects.first()?;
    Some(rects.iter().fold(first, |acc, r| acc.union(r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qxl::testutil::*;

    const W: i32 = 32;
    const H: i32 = 16;

    /// A Linux-like guest with a 32x16 primary (stride 128) painted with `background`.
    fn guest() -> FakeGuest {
        let mut g = FakeGuest::linux();
        g.create_primary(32, 16, 128, SPICE_SURFACE_FMT_32_XRGB)
            .unwrap();
        let full = Rect::new(0, 0, W, H);
        let pixels: Vec<u32> = (0..W * H).map(background).collect();
        g.linux_draw_copy(full, &[full], &pixels, 128);
        g.run();
        g
    }

    fn background(i: i32) -> u32 {
        (0x0a_0b0c + 0x1_0203 * i as u32) & 0x00ff_ffff
    }

    fn at(x: i32, y: i32) -> usize {
        (y * W + x) as usize
    }

    fn fill_union(color: u32, rop: u16) -> Vec<u8> {
        let mut u = SPICE_BRUSH_TYPE_SOLID.to_le_bytes().to_vec();
        u.extend_from_slice(&color.to_le_bytes());
        u.extend_from_slice(&[0; 12]);
        u.extend_from_slice(&rop.to_le_bytes());
        u
    }

    fn push_draw(g: &mut FakeGuest, surface: u32, kind: u8, bbox: Rect, clip: u64, u: &[u8]) {
        let d = g.drawable(surface, kind, bbox, clip, u);
        g.push_cmd(QXL_CMD_DRAW, d);
    }

    /// Asserts that pixels inside `inside` have `f(x, y)` and all others the background.
    fn check(g: &FakeGuest, inside: impl Fn(i32, i32) -> bool, f: impl Fn(i32, i32) -> u32) {
        let screen = g.screen();
        for y in 0..H {
            for x in 0..W {
                let want = if inside(x, y) {
                    f(x, y)
                } else {
                    background(y * W + x)
                };
                assert_eq!(screen[at(x, y)], want, "pixel ({x},{y})");
            }
        }
    }

    fn in_any(rects: &[Rect], x: i32, y: i32) -> bool {
        rects
            .iter()
            .any(|r| r.contains(&Rect::new(x, y, x + 1, y + 1)))
    }

    #[test]
    fn linux_draw_copy_honours_the_clip_rects() {
        let mut g = guest();
        let bbox = Rect::new(4, 2, 20, 10);
        let clips = [Rect::new(4, 2, 12, 6), Rect::new(8, 4, 20, 10)];
        let pixels: Vec<u32> = (0..16 * 8).map(|i| 0xa00000 | i).collect();

        g.linux_draw_copy(bbox, &clips, &pixels, 80);
        g.run();

        check(
            &g,
            |x, y| in_any(&clips, x, y),
            |x, y| 0xa00000 | ((y - 2) * 16 + x - 4) as u32,
        );
        assert_eq!(g.engine.stats().drawables[usize::from(QXL_DRAW_COPY)], 2);
        let band_rows = 2 + 2 + 4;
        assert_eq!(
            g.engine.stats().raw_copy_rows,
            16 + band_rows,
            "memmove path"
        );
        assert_eq!(g.collect_releases(), [1, 2]);
    }

    #[test]
    fn chunked_and_bottom_up_bitmaps() {
        let mut g = guest();
        let bbox = Rect::new(3, 1, 13, 7);
        let pixels: Vec<u32> = (0..60).map(|i| 0x300000 | i).collect();
        let data = pixel_bytes(&pixels);
        let chunk = g.chunks(&data, 7);
        let image = g.bitmap_image(
            SPICE_BITMAP_FMT_32BIT,
            QXL_BITMAP_TOP_DOWN,
            10,
            6,
            40,
            0,
            chunk,
        );
        let u = FakeGuest::copy_union(image, Rect::new(0, 0, 10, 6), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, bbox, 0, &u);

        let rgb: Vec<u8> = (0..6u8)
            .rev()
            .flat_map(|row| (0..10u8).flat_map(move |x| [x, row, 0x55]))
            .collect();
        let data = g.put(&rgb);
        let image = g.bitmap_image(
            SPICE_BITMAP_FMT_24BIT,
            QXL_BITMAP_DIRECT,
            10,
            6,
            30,
            0,
            data,
        );
        let u = FakeGuest::copy_union(image, Rect::new(0, 0, 10, 6), SPICE_ROPD_OP_PUT);
        push_draw(
            &mut g,
            0,
            QXL_DRAW_COPY,
            bbox.translate(16, 8).unwrap(),
            0,
            &u,
        );
        g.run();

        let screen = g.screen();
        assert_eq!(screen[at(3, 1)], 0x300000);
        assert_eq!(screen[at(12, 6)], 0x300000 | 59);
        assert_eq!(screen[at(13, 6)], background(6 * W + 13));
        assert_eq!(
            screen[at(19, 9)],
            0x550000,
            "top row of a bottom-up bitmap is the last"
        );
        assert_eq!(screen[at(28, 14)], 0x550509);
    }

    #[test]
    fn palette_bitmaps() {
        let mut g = guest();
        let palette = g.palette(&[0x000000, 0xffffff, 0x00ff00]);
        let data = g.put(&[2, 1, 0, 0, 1, 2, 0, 0]);
        let image = g.bitmap_image(SPICE_BITMAP_FMT_8BIT, 4 | 1, 2, 2, 4, palette, data);
        let u = FakeGuest::copy_union(image, Rect::new(0, 0, 2, 2), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, Rect::new(0, 0, 2, 2), 0, &u);

        let data = g.chunks(&[0b1011_0000, 0, 0b0100_0000, 0], 2);
        let image = g.bitmap_image(SPICE_BITMAP_FMT_1BIT_BE, 4, 4, 2, 2, palette, data);
        let u = FakeGuest::copy_union(image, Rect::new(0, 0, 4, 2), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, Rect::new(10, 0, 14, 2), 0, &u);
        g.run();

        let s = g.screen();
        assert_eq!(
            [s[at(0, 0)], s[at(1, 0)], s[at(0, 1)], s[at(1, 1)]],
            [0xff00, 0xffffff, 0xffffff, 0xff00]
        );
        let row0: Vec<u32> = (10..14).map(|x| s[at(x, 0)]).collect();
        let row1: Vec<u32> = (10..14).map(|x| s[at(x, 1)]).collect();
        assert_eq!(row0, [0xffffff, 0, 0xffffff, 0xffffff]);
        assert_eq!(row1, [0, 0xffffff, 0, 0]);
    }

    #[test]
    fn fills_and_rop_only_drawables() {
        let mut g = guest();
        let (a, b, c, d) = (
            Rect::new(0, 0, 4, 4),
            Rect::new(4, 0, 8, 4),
            Rect::new(8, 0, 12, 4),
            Rect::new(12, 0, 16, 4),
        );
        push_draw(
            &mut g,
            0,
            QXL_DRAW_FILL,
            a,
            0,
            &fill_union(0x123456, SPICE_ROPD_OP_PUT),
        );
        let inv_brush = SPICE_ROPD_OP_PUT | SPICE_ROPD_INVERS_BRUSH;
        push_draw(
            &mut g,
            0,
            QXL_DRAW_FILL,
            b,
            0,
            &fill_union(0x123456, inv_brush),
        );
        push_draw(
            &mut g,
            0,
            QXL_DRAW_FILL,
            c,
            0,
            &fill_union(0x00ffff, SPICE_ROPD_OP_XOR),
        );
        push_draw(&mut g, 0, QXL_DRAW_WHITENESS, d, 0, &[0; 17]);
        push_draw(
            &mut g,
            0,
            QXL_DRAW_BLACKNESS,
            Rect::new(16, 0, 20, 4),
            0,
            &[0; 17],
        );
        push_draw(
            &mut g,
            0,
            QXL_DRAW_INVERS,
            Rect::new(20, 0, 24, 4),
            0,
            &[0; 17],
        );
        g.run();

        check(
            &g,
            |x, y| x < 24 && y < 4,
            |x, y| {
                let bg = background(y * W + x);
                match x / 4 {
                    0 => 0x123456,
                    1 => 0xedcba9,
                    2 => bg ^ 0x00ffff,
                    3 => 0xffffff,
                    4 => 0,
                    _ => !bg & 0xffffff,
                }
            },
        );
    }

    #[test]
    fn blend_and_opaque_apply_their_rop() {
        let mut g = guest();
        let data = g.put(&pixel_bytes(&[0x0f0f0f, 0xf0f0f0]));
        let image = g.bitmap_image(SPICE_BITMAP_FMT_32BIT, 4 | 1, 2, 1, 8, 0, data);
        let bbox = Rect::new(0, 0, 2, 1);
        let area = Rect::new(0, 0, 2, 1);
        push_draw(
            &mut g,
            0,
            QXL_DRAW_FILL,
            Rect::new(0, 0, 4, 1),
            0,
            &fill_union(0x3c3c3c, 8),
        );

        let blend = FakeGuest::copy_union(image, area, SPICE_ROPD_OP_XOR);
        push_draw(&mut g, 0, QXL_DRAW_BLEND, bbox, 0, &blend);
        let mut opaque = image.to_le_bytes().to_vec();
        opaque.extend_from_slice(&rect_bytes(area));
        opaque.extend_from_slice(&fill_union(0xffffff, 0)[..20]);
        opaque.extend_from_slice(&(SPICE_ROPD_OP_AND | SPICE_ROPD_INVERS_SRC).to_le_bytes());
        push_draw(
            &mut g,
            0,
            QXL_DRAW_OPAQUE,
            bbox.translate(2, 0).unwrap(),
            0,
            &opaque,
        );
        g.run();

        let s = g.screen();
        assert_eq!(&s[..4], [0x333333, 0xcccccc, 0x303030, 0x0c0c0c]);
    }

    #[test]
    fn scaled_copy_and_surface_images() {
        let mut g = guest();
        let data = g.put(&pixel_bytes(&[1, 2, 3, 4]));
        let image = g.bitmap_image(SPICE_BITMAP_FMT_RGBA, 4 | 1, 2, 2, 8, 0, data);
        let u = FakeGuest::copy_union(image, Rect::new(0, 0, 2, 2), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, Rect::new(0, 0, 4, 4), 0, &u);

        let src = g.surface_image(0);
        let u = FakeGuest::copy_union(src, Rect::new(0, 0, 4, 4), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, Rect::new(2, 2, 6, 6), 0, &u);
        g.run();

        let s = g.screen();
        let rows: Vec<Vec<u32>> = (0..6)
            .map(|y| (0..6).map(|x| s[at(x, y)]).collect())
            .collect();
        assert_eq!(rows[0][..4], [1, 1, 2, 2]);
        assert_eq!(rows[1][..4], [1, 1, 2, 2]);
        assert_eq!(rows[2][..6], [3, 3, 1, 1, 2, 2]);
        assert_eq!(rows[5][2..6], [3, 3, 4, 4]);
    }

    #[test]
    fn copy_from_an_off_screen_surface() {
        let mut g = guest();
        let mem = g.alloc_vram(64 * 4);
        let mut b = 3u32.to_le_bytes().to_vec();
        b.push(QXL_SURFACE_CMD_CREATE);
        b.extend_from_slice(&0u32.to_le_bytes());
        for v in [SPICE_SURFACE_FMT_32_ARGB, 8, 8, 32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&g.slot2(mem).to_le_bytes());
        let create = g.body(&b);
        g.push_cmd(QXL_CMD_SURFACE, create);
        let fill = fill_union(0x445566, SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 3, QXL_DRAW_FILL, Rect::new(2, 2, 6, 6), 0, &fill);
        let src = g.surface_image(3);
        let u = FakeGuest::copy_union(src, Rect::new(0, 0, 8, 8), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, Rect::new(10, 4, 18, 12), 0, &u);
        g.run();

        check(
            &g,
            |x, y| (10..18).contains(&x) && (4..12).contains(&y),
            |x, y| {
                let inner = (12..16).contains(&x) && (6..10).contains(&y);
                if inner {
                    0x445566
                } else {
                    0
                }
            },
        );
        let offscreen = g.engine.surface(3).unwrap();
        let alpha = g.bars.read_u32(offscreen.pixel_ptr(3, 3)).unwrap() >> 24;
        assert_eq!(alpha, 0xff, "fills on ARGB surfaces are opaque");
    }

    fn copy_bits(g: &mut FakeGuest, bbox: Rect, x: i32, y: i32, clip: u64) {
        let mut u = x.to_le_bytes().to_vec();
        u.extend_from_slice(&y.to_le_bytes());
        push_draw(g, 0, QXL_DRAW_COPY_BITS, bbox, clip, &u);
        g.run();
    }

    #[test]
    fn copy_bits_overlapping_in_both_directions() {
        for (dx, dy) in [(3, 2), (-3, -2), (5, 0), (0, -1), (-2, 3)] {
            let mut g = guest();
            let bbox = Rect::new(8 + dx, 4 + dy, 20 + dx, 12 + dy);
            let halves = [
                Rect::new(bbox.left, bbox.top, bbox.left + 6, bbox.bottom),
                Rect::new(bbox.left + 6, bbox.top, bbox.right, bbox.bottom),
            ];
            let clip = g.clip_rects(&halves);

            copy_bits(&mut g, bbox, 8, 4, clip);

            let inside = |x, y| bbox.contains(&Rect::new(x, y, x + 1, y + 1));
            check(&g, inside, |x, y| background((y - dy) * W + x - dx));
        }
    }

    #[test]
    fn copy_bits_with_overlapping_clip_rects() {
        for (dx, dy) in [(2, 1), (-2, -1), (3, 0), (-1, 2)] {
            let mut g = guest();
            let bbox = Rect::new(8 + dx, 4 + dy, 20 + dx, 12 + dy);
            let clips = [
                Rect::new(bbox.left, bbox.top, bbox.left + 8, bbox.bottom - 2),
                Rect::new(bbox.left + 4, bbox.top + 3, bbox.right, bbox.bottom),
                Rect::new(bbox.left + 2, bbox.top + 1, bbox.left + 9, bbox.top + 7),
            ];
            let clip = g.clip_rects(&clips);

            copy_bits(&mut g, bbox, 8, 4, clip);

            check(
                &g,
                |x, y| in_any(&clips, x, y),
                |x, y| background((y - dy) * W + x - dx),
            );
        }
    }

    #[test]
    fn copy_bits_from_outside_the_surface_is_clipped() {
        let mut g = guest();
        let bbox = Rect::new(0, 0, 8, 4);
        copy_bits(&mut g, bbox, W - 4, -2, 0);

        let inside = |x: i32, y: i32| x < 4 && (2..4).contains(&y);
        check(&g, inside, |x, y| background((y - 2) * W + x + W - 4));
        assert_eq!(g.engine.stats().guest_errors, 0);
    }

    #[test]
    fn refused_and_unsupported_drawables_are_released() {
        let mut g = guest();
        let bbox = Rect::new(0, 0, 4, 4);
        push_draw(&mut g, 0, QXL_DRAW_TEXT, bbox, 0, &[]);
        let mut pattern = SPICE_BRUSH_TYPE_PATTERN.to_le_bytes().to_vec();
        pattern.extend_from_slice(&[0; 18]);
        push_draw(&mut g, 0, QXL_DRAW_FILL, bbox, 0, &pattern);
        push_draw(&mut g, 9, QXL_DRAW_FILL, bbox, 0, &fill_union(1, 8));
        push_draw(
            &mut g,
            0,
            QXL_DRAW_FILL,
            Rect::new(4, 0, 0, 4),
            0,
            &fill_union(1, 8),
        );
        let data = g.put(&[0; 16]);
        let image = g.bitmap_image(SPICE_BITMAP_FMT_32BIT, 4 | 1, 2, 2, 8, 0, data);
        let u = FakeGuest::copy_union(image, Rect::new(0, 0, 3, 2), SPICE_ROPD_OP_PUT);
        push_draw(&mut g, 0, QXL_DRAW_COPY, bbox, 0, &u);
        let many = g.put(&1025u32.to_le_bytes());
        push_draw(&mut g, 0, QXL_DRAW_FILL, bbox, many, &fill_union(1, 8));
        let d = g.drawable(0, QXL_DRAW_FILL, bbox, 0, &fill_union(1, 8));
        g.write_ram((d & 0xffff_ffff_ffff) + 47, &7u32.to_le_bytes());
        g.push_cmd(QXL_CMD_DRAW, d);
        let mut masked = fill_union(0x0000ff, SPICE_ROPD_OP_PUT);
        masked.extend_from_slice(&[0; 9]);
        masked.extend_from_slice(&g.slot1(0x100).to_le_bytes());
        push_draw(&mut g, 0, QXL_DRAW_FILL, bbox, 0, &masked);
        g.run();

        let stats = g.engine.stats();
        assert_eq!(stats.unsupported_drawables, 2);
        assert_eq!(stats.guest_errors, 5);
        assert_eq!(stats.masks_ignored, 1);
        assert_eq!(g.collect_releases(), (1..=9).collect::<Vec<u64>>());
        check(&g, |x, y| x < 4 && y < 4, |_, _| 0x0000ff);
    }

    /// A small deterministic generator for the hostile-guest test.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            let index = self.next() % items.len() as u64;
            items[usize::try_from(index).unwrap()]
        }
    }

    #[test]
    fn hostile_drawables_never_panic_and_are_all_released() {
        let mut g = guest();
        let noise_len = 64 << 10;
        let noise_off = g.alloc(noise_len);
        let mut rng = Lcg(0x5eed);
        let noise: Vec<u8> = (0..noise_len)
            .map(|_| rng.next().to_le_bytes()[0])
            .collect();
        g.write_ram(noise_off, &noise);
        let edges = [i32::MIN, -1, 0, 1, 7, W, i32::MAX, -65536, 65535];

        for round in 0..3000u32 {
            let mut u = [0u8; 68];
            u.iter_mut().for_each(|b| *b = rng.next().to_le_bytes()[0]);
            let ptr = g.slot1(noise_off + rng.next() % noise_len);
            let u_ptr = rng.pick(&[0usize, 4, 12]);
            u[u_ptr..u_ptr + 8].copy_from_slice(&ptr.to_le_bytes());
            let (l, t) = (rng.pick(&edges), rng.pick(&edges));
            let (r, b) = (rng.pick(&edges), rng.pick(&edges));
            let clip = if rng.next() % 2 == 0 {
                0
            } else {
                g.slot1(noise_off + rng.next() % noise_len)
            };
            let kind = u8::try_from(rng.next() % 16).unwrap();
            let surface = rng.pick(&[0, 0, 0, 1, 1023, 1024, u32::MAX]);
            push_draw(&mut g, surface, kind, Rect::new(l, t, r, b), clip, &u);
            if round % 16 == 15 {
                g.run();
                g.collect_releases();
            }
        }
        g.run();
        g.collect_releases();

        let stats = g.engine.stats();
        assert_eq!(stats.commands, 3001);
        assert_eq!(stats.releases, 3001);
    }
}
