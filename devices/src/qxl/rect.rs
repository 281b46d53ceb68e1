// SPDX-License-Identifier: Apache-2.0
//! Rectangles in surface pixels, the clip-list decomposition the renderer uses, and the damage
//! list kept for surface 0.

/// A QXLRect: half-open `[left, right) x [top, bottom)`, in the guest's field order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// First row.
    pub top: i32,
    /// First column.
    pub left: i32,
    /// One past the last row.
    pub bottom: i32,
    /// One past the last column.
    pub right: i32,
}

/// Bytes of a QXLRect in guest memory.
pub const RECT_SIZE: usize = 16;

/// Most damage rectangles kept before they collapse into their bounding box.
pub const MAX_DAMAGE_RECTS: usize = 64;

impl Rect {
    /// Creates the rectangle `[left, right) x [top, bottom)`.
    pub const fn new(left: i32, top: i32, right: i32, bottom: i32) -> Self {
        Rect {
            top,
            left,
            bottom,
            right,
        }
    }

    /// Parses a QXLRect (four little-endian i32: top, left, bottom, right).
    pub fn from_le_bytes(b: &[u8; RECT_SIZE]) -> Self {
        let field = |i: usize| i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Rect {
            top: field(0),
            left: field(4),
            bottom: field(8),
            right: field(12),
        }
    }

    /// Width in pixels, 0 when empty or inverted.
    pub fn width(&self) -> u32 {
        u32::try_from(i64::from(self.right) - i64::from(self.left)).unwrap_or(0)
    }

    /// Height in pixels, 0 when empty or inverted.
    pub fn height(&self) -> u32 {
        u32::try_from(i64::from(self.bottom) - i64::from(self.top)).unwrap_or(0)
    }

    /// Returns whether the rectangle covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.left >= self.right || self.top >= self.bottom
    }

    /// Returns whether `left <= right` and `top <= bottom`.
    pub fn is_ordered(&self) -> bool {
        self.left <= self.right && self.top <= self.bottom
    }

    /// Returns the common part of two rectangles, `None` when it is empty.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let r = Rect {
            top: self.top.max(other.top),
            left: self.left.max(other.left),
            bottom: self.bottom.min(other.bottom),
            right: self.right.min(other.right),
        };
        (!r.is_empty()).then_some(r)
    }

    /// Returns the smallest rectangle holding both.
    pub fn union(&self, other: &Rect) -> Rect {
        Rect {
            top: self.top.min(other.top),
            left: self.left.min(other.left),
            bottom: self.bottom.max(other.bottom),
            right: self.right.max(other.right),
        }
    }

    /// Returns whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Rect) -> bool {
        self.left <= other.left
            && self.top <= other.top
            && self.right >= other.right
            && self.bottom >= other.bottom
    }

    /// Moves the rectangle by `(dx, dy)`, `None` if a coordinate overflows.
    pub fn translate(&self, dx: i32, dy: i32) -> Option<Rect> {
        Some(Rect {
            top: self.top.checked_add(dy)?,
            left: self.left.checked_add(dx)?,
            bottom: self.bottom.checked_add(dy)?,
            right: self.right.checked_add(dx)?,
        })
    }
}

/// Returns non-overlapping rectangles that together cover exactly the union of `rects`
/// (empty ones are ignored), so that a raster operation touches each pixel once; `None` when
/// that takes more than `max` rectangles.
///
/// Overlapping input is cut into horizontal bands with a sweep line that keeps the
/// rectangles crossing the current band sorted by left edge: O(n^2) work at worst for n
/// rectangles, and never more than `max` rectangles of output.
pub fn disjoint_rects(rects: &[Rect], max: usize) -> Option<Vec<Rect>> {
    let mut rects: Vec<Rect> = rects.iter().copied().filter(|r| !r.is_empty()).collect();
    if pairwise_disjoint(&rects) {
        return (rects.len() <= max).then_some(rects);
    }

    let mut ys: Vec<i32> = rects.iter().flat_map(|r| [r.top, r.bottom]).collect();
    ys.sort_unstable();
    ys.dedup();
    rects.sort_unstable_by_key(|r| r.top);

    let mut out = Vec::new();
    let mut active: Vec<Rect> = Vec::new();
    let mut next = 0;
    for band in ys.windows(2) {
        let (top, bottom) = (band[0], band[1]);
        active.retain(|r| r.bottom > top);
        while let Some(r) = rects.get(next).filter(|r| r.top <= top) {
            let at = active.partition_point(|a| a.left <= r.left);
            active.insert(at, *r);
            next += 1;
        }

        merge_spans(&active, |left, right| {
            out.push(Rect::new(left, top, right, bottom))
        });
        if out.len() > max {
            return None;
        }
    }
    Some(out)
}

/// Returns whether no two rectangles overlap (checked pairwise only for short lists).
fn pairwise_disjoint(rects: &[Rect]) -> bool {
    const PAIRWISE_LIMIT: usize = 64;
    if rects.len() > PAIRWISE_LIMIT {
        return false;
    }
    rects
        .iter()
        .enumerate()
        .all(|(i, a)| rects[i + 1..].iter().all(|b| a.intersect(b).is_none()))
}

/// Calls `f` on the union of the `[left, right)` spans of `rects` (sorted by left), one call
/// per maximal run.
fn merge_spans(rects: &[Rect], mut f: impl FnMut(i32, i32)) {
    let mut iter = rects.iter().map(|r| (r.left, r.right));
    let Some((mut left, mut right)) = iter.next() else {
        return;
    };
    for (l, r) in iter {
        if l <= right {
            right = right.max(r);
        } else {
            f(left, right);
            (left, right) = (l, r);
        }
    }
    f(left, right);
}

/// The rectangles of a surface changed since they were last taken, bounded in number.
#[derive(Debug, Default)]
pub struct Damage {
    rects: Vec<Rect>,
}

impl Damage {
    /// Records `rect`; past [`MAX_DAMAGE_RECTS`] everything collapses into one bounding box.
    pub fn add(&mut self, rect: Rect) {
        if rect.is_empty() || self.rects.iter().any(|r| r.contains(&rect)) {
            return;
        }
        self.rects.retain(|r| !rect.contains(r));

        if self.rects.len() < MAX_DAMAGE_RECTS {
            self.rects.push(rect);
            return;
        }
        let bbox = self.rects.iter().fold(rect, |acc, r| acc.union(r));
        self.rects.clear();
        self.rects.push(bbox);
    }

    /// Moves the recorded rectangles to the end of `out`.
    pub fn take(&mut self, out: &mut Vec<Rect>) {
        out.append(&mut self.rects);
    }

    /// Forgets everything recorded.
    pub fn clear(&mut self) {
        self.rects.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn coverage(rects: &[Rect]) -> HashMap<(i32, i32), u32> {
        let mut seen = HashMap::new();
        for r in disjoint_rects(rects, usize::MAX).unwrap() {
            for y in r.top..r.bottom {
                for x in r.left..r.right {
                    *seen.entry((x, y)).or_insert(0) += 1;
                }
            }
        }
        seen
    }

    #[test]
    fn parse_uses_qxl_field_order() {
        let mut b = [0u8; RECT_SIZE];
        b[0..4].copy_from_slice(&1i32.to_le_bytes());
        b[4..8].copy_from_slice(&2i32.to_le_bytes());
        b[8..12].copy_from_slice(&3i32.to_le_bytes());
        b[12..16].copy_from_slice(&(-4i32).to_le_bytes());
        assert_eq!(Rect::from_le_bytes(&b), Rect::new(2, 1, -4, 3));
    }

    #[test]
    fn sizes_of_inverted_rects_are_zero() {
        let r = Rect::new(10, 0, 5, 4);
        assert_eq!(r.width(), 0);
        assert_eq!(r.height(), 4);
        assert!(r.is_empty());
        assert!(!r.is_ordered());
        let huge = Rect::new(i32::MIN, i32::MIN, i32::MAX, i32::MAX);
        assert_eq!(huge.width(), u32::MAX);
    }

    #[test]
    fn overlapping_rects_are_covered_once() {
        let rects = [
            Rect::new(0, 0, 10, 10),
            Rect::new(5, 5, 15, 15),
            Rect::new(2, 2, 3, 3),
            Rect::new(20, 0, 20, 30),
        ];
        let seen = coverage(&rects);

        assert!(seen.values().all(|&n| n == 1));
        assert_eq!(seen.len(), 100 + 100 - 25);
        assert!(seen.contains_key(&(14, 14)));
        assert!(!seen.contains_key(&(14, 0)));
    }

    #[test]
    fn many_overlapping_rects_use_bands() {
        let rects: Vec<Rect> = (0..100).map(|i| Rect::new(i, 0, i + 10, 10)).collect();
        let seen = coverage(&rects);
        assert!(seen.values().all(|&n| n == 1));
        assert_eq!(seen.len(), 109 * 10);
    }

    #[test]
    fn grids_of_overlapping_rects_are_capped_and_fast() {
        let mut rects: Vec<Rect> = (0..512)
            .map(|i| Rect::new(2 * i, 0, 2 * i + 1, 4096))
            .collect();
        rects.extend((0..512).map(|i| Rect::new(0, 2 * i, 1024, 2 * i + 1)));

        let start = std::time::Instant::now();
        assert_eq!(disjoint_rects(&rects, 65536), None);
        assert!(start.elapsed() < std::time::Duration::from_millis(500));

        let few = disjoint_rects(&rects[..600], 65536).unwrap();
        let area: u64 = few
            .iter()
            .map(|r| u64::from(r.width()) * u64::from(r.height()))
            .sum();
        assert_eq!(area, 512 * 4096 + 88 * 1024 - 88 * 512);
    }

    #[test]
    fn damage_collapses_past_the_limit() {
        let mut damage = Damage::default();
        damage.add(Rect::new(0, 0, 4, 4));
        damage.add(Rect::new(1, 1, 2, 2));
        let mut out = Vec::new();
        damage.take(&mut out);
        assert_eq!(out, [Rect::new(0, 0, 4, 4)]);

        for i in 0..=MAX_DAMAGE_RECTS {
            let x = i32::try_from(i).unwrap() * 10;
            damage.add(Rect::new(x, 0, x + 1, 1));
        }
        out.clear();
        damage.take(&mut out);
        assert_eq!(out, [Rect::new(0, 0, 641, 1)]);
    }
}
