// SPDX-License-Identifier: Apache-2.0
//! Pixel buffers and the few raster operations the display channel needs: fill, copy from an
//! image and copy within a surface, each limited by a clip and by the surface's edges.

/// A SPICE Rect: top, left, bottom, right (exclusive), in that order on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    /// First row.
    pub top: i32,
    /// First column.
    pub left: i32,
    /// Row after the last.
    pub bottom: i32,
    /// Column after the last.
    pub right: i32,
}

impl Rect {
    /// The rectangle at (left, top) of `width` x `height` pixels.
    pub fn new(left: i32, top: i32, width: i32, height: i32) -> Rect {
        Rect {
            top,
            left,
            bottom: top.saturating_add(height),
            right: left.saturating_add(width),
        }
    }

    /// Width, or 0 when right < left.
    pub fn width(&self) -> i64 {
        (i64::from(self.right) - i64::from(self.left)).max(0)
    }

    /// Height, or 0 when bottom < top.
    pub fn height(&self) -> i64 {
        (i64::from(self.bottom) - i64::from(self.top)).max(0)
    }

    /// Whether the rectangle holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.width() == 0 || self.height() == 0
    }

    /// The common part of two rectangles (possibly empty).
    pub fn intersect(&self, other: &Rect) -> Rect {
        Rect {
            top: self.top.max(other.top),
            left: self.left.max(other.left),
            bottom: self.bottom.min(other.bottom),
            right: self.right.min(other.right),
        }
    }
}

/// A SPICE Clip: nothing, or a list of rectangles whose union limits drawing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clip {
    /// Draw the whole box.
    None,
    /// Draw only inside these rectangles.
    Rects(Vec<Rect>),
}

/// A 32-bit pixel buffer, row after row with no padding; pixels are 0xAARRGGBB values (the
/// alpha byte is 0 on xRGB surfaces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pixmap {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// width * height pixels, top row first.
    pub pixels: Vec<u32>,
}

impl Pixmap {
    /// A black pixmap.
    pub fn new(width: u32, height: u32) -> Pixmap {
        let len = usize::try_from(u64::from(width) * u64::from(height)).expect("checked size");
        Pixmap {
            width,
            height,
            pixels: vec![0; len],
        }
    }

    /// The whole pixmap as a rectangle.
    pub fn bounds(&self) -> Rect {
        let width = i32::try_from(self.width).unwrap_or(i32::MAX);
        let height = i32::try_from(self.height).unwrap_or(i32::MAX);
        Rect::new(0, 0, width, height)
    }

    /// The pixel at (x, y), which the caller keeps inside the bounds.
    pub fn get(&self, x: i32, y: i32) -> u32 {
        self.pixels[self.index(x, y)]
    }

    fn index(&self, x: i32, y: i32) -> usize {
        let x = usize::try_from(x).expect("x inside the bounds");
        let y = usize::try_from(y).expect("y inside the bounds");
        y * usize::try_from(self.width).expect("width fits usize") + x
    }

    /// The parts of `area` that `clip` allows and that lie on the pixmap, as rectangles that
    /// do not overlap (clip rectangles may, and an invert must touch each pixel once).
    pub fn regions(&self, area: &Rect, clip: &Clip) -> Vec<Rect> {
        let area = area.intersect(&self.bounds());
        if area.is_empty() {
            return Vec::new();
        }
        match clip {
            Clip::None => vec![area],
            Clip::Rects(rects) => {
                let parts: Vec<Rect> = rects
                    .iter()
                    .map(|r| r.intersect(&area))
                    .filter(|r| !r.is_empty())
                    .collect();
                disjoint(&parts)
            }
        }
    }

    /// Sets every pixel of `area` allowed by `clip` to `op(old pixel)`.
    pub fn apply(&mut self, area: &Rect, clip: &Clip, op: impl Fn(u32) -> u32) {
        for region in self.regions(area, clip) {
            for y in region.top..region.bottom {
                let start = self.index(region.left, y);
                let end = self.index(region.right - 1, y) + 1;
                for pixel in &mut self.pixels[start..end] {
                    *pixel = op(*pixel);
                }
            }
        }
    }

    /// Copies `src` into `dest` (clipped): the pixel at dest (x, y) comes from src
    /// (src_left + x - dest.left, src_top + y - dest.top). `mask` is ORed out of the copied
    /// pixels' alpha (0xff00_0000 for an xRGB surface). The caller checks that the source
    /// rectangle lies inside `src`.
    pub fn copy_from(
        &mut self,
        dest: &Rect,
        clip: &Clip,
        src: &Pixmap,
        (src_left, src_top): (i32, i32),
        alpha_mask: u32,
    ) {
        for region in self.regions(dest, clip) {
            let sx = src_left + (region.left - dest.left);
            let width = usize::try_from(region.width()).expect("a positive width");
            for y in region.top..region.bottom {
                let sy = src_top + (y - dest.top);
                let from = src.index(sx, sy);
                let to = self.index(region.left, y);
                for i in 0..width {
                    self.pixels[to + i] = src.pixels[from + i] & !alpha_mask;
                }
            }
        }
    }
}

/// The union of `rects` (none empty) as disjoint rectangles: cut into horizontal bands at
/// every top and bottom, then merge the spans inside each band.
fn disjoint(rects: &[Rect]) -> Vec<Rect> {
    let mut edges: Vec<i32> = rects.iter().flat_map(|r| [r.top, r.bottom]).collect();
    edges.sort_unstable();
    edges.dedup();

    let mut out = Vec::new();
    for band in edges.windows(2) {
        let (top, bottom) = (band[0], band[1]);
        let mut spans: Vec<(i32, i32)> = rects
            .iter()
            .filter(|r| r.top <= top && r.bottom >= bottom)
            .map(|r| (r.left, r.right))
            .collect();
        spans.sort_unstable();

        let mut merged: Vec<(i32, i32)> = Vec::new();
        for (left, right) in spans {
            match merged.last_mut() {
                Some(last) if left <= last.1 => last.1 = last.1.max(right),
                _ => merged.push((left, right)),
            }
        }
        out.extend(merged.into_iter().map(|(left, right)| Rect {
            top,
            left,
            bottom,
            right,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x3 pixmap whose pixel (x, y) is 0x10 * y + x.
    fn numbered() -> Pixmap {
        Pixmap {
            width: 4,
            height: 3,
            pixels: (0..3)
                .flat_map(|y| (0..4).map(move |x| 0x10 * y + x))
                .collect(),
        }
    }

    #[test]
    fn apply_fills_only_the_box_inside_the_pixmap() {
        let mut p = Pixmap::new(4, 3);
        p.apply(&Rect::new(2, 1, 10, 10), &Clip::None, |_| 7);

        assert_eq!(p.pixels, [0, 0, 0, 0, 0, 0, 7, 7, 0, 0, 7, 7]);
    }

    #[test]
    fn apply_honours_overlapping_clip_rects() {
        let mut p = Pixmap::new(4, 3);
        let clip = Clip::Rects(vec![Rect::new(0, 0, 2, 1), Rect::new(1, 0, 1, 3)]);
        p.apply(&Rect::new(0, 0, 4, 2), &clip, |v| v ^ 1);

        assert_eq!(p.pixels, [1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            p.regions(&Rect::new(0, 0, 4, 2), &clip),
            [Rect::new(0, 0, 2, 1), Rect::new(1, 1, 1, 1)]
        );
    }

    #[test]
    fn empty_and_negative_boxes_draw_nothing() {
        let mut p = Pixmap::new(4, 3);
        p.apply(&Rect::new(-5, -5, 3, 3), &Clip::None, |_| 1);
        p.apply(
            &Rect {
                top: 2,
                left: 2,
                bottom: 1,
                right: 1,
            },
            &Clip::None,
            |_| 1,
        );
        p.apply(&Rect::new(1, 1, 2, 2), &Clip::Rects(vec![]), |_| 1);

        assert!(p.pixels.iter().all(|&v| v == 0));
    }

    #[test]
    fn copy_from_maps_source_offsets_and_masks_alpha() {
        let mut src = numbered();
        src.pixels[0x5] |= 0xff00_0000;
        let mut p = Pixmap::new(4, 3);
        p.copy_from(
            &Rect::new(2, 1, 2, 2),
            &Clip::None,
            &src,
            (1, 1),
            0xff00_0000,
        );

        assert_eq!(p.pixels, [0, 0, 0, 0, 0, 0, 0x11, 0x12, 0, 0, 0x21, 0x22]);
    }

    #[test]
    fn copy_from_clipped_at_the_right_edge_keeps_the_source_alignment() {
        let src = numbered();
        let mut p = Pixmap::new(4, 3);
        p.copy_from(&Rect::new(3, 0, 3, 1), &Clip::None, &src, (0, 2), 0);

        assert_eq!(p.pixels, [0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
