// SPDX-License-Identifier: Apache-2.0
//! Rectangles and the bounded dirty region of the slow-client policy.

/// A rectangle in primary-surface pixels: the top-left corner and a size. An empty rectangle
/// (`w == 0` or `h == 0`) covers nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rect {
    /// Left edge.
    pub x: i32,
    /// Top edge.
    pub y: i32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

impl Rect {
    /// Creates a rectangle.
    pub const fn new(x: i32, y: i32, w: u32, h: u32) -> Self {
        Rect { x, y, w, h }
    }

    /// Returns whether the rectangle covers no pixel.
    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    fn right(&self) -> i64 {
        i64::from(self.x) + i64::from(self.w)
    }

    fn bottom(&self) -> i64 {
        i64::from(self.y) + i64::from(self.h)
    }

    /// Builds a rectangle from edges that callers have already bounded to i32 coordinates.
    fn from_edges(left: i64, top: i64, right: i64, bottom: i64) -> Rect {
        if right <= left || bottom <= top {
            return Rect::default();
        }
        Rect {
            x: i32::try_from(left).unwrap_or(i32::MAX),
            y: i32::try_from(top).unwrap_or(i32::MAX),
            w: u32::try_from(right - left).unwrap_or(u32::MAX),
            h: u32::try_from(bottom - top).unwrap_or(u32::MAX),
        }
    }

    /// The pixels both rectangles cover (empty when they do not overlap).
    pub fn intersect(&self, other: &Rect) -> Rect {
        let left = i64::from(self.x).max(i64::from(other.x));
        let top = i64::from(self.y).max(i64::from(other.y));
        let right = self.right().min(other.right());
        let bottom = self.bottom().min(other.bottom());
        Rect::from_edges(left, top, right, bottom)
    }

    /// Returns whether the two rectangles share at least one pixel.
    pub fn intersects(&self, other: &Rect) -> bool {
        !self.intersect(other).is_empty()
    }

    /// Returns whether every pixel of `other` lies in `self` (an empty `other` always does).
    pub fn contains(&self, other: &Rect) -> bool {
        other.is_empty()
            || (self.x <= other.x
                && self.y <= other.y
                && self.right() >= other.right()
                && self.bottom() >= other.bottom())
    }

    /// The smallest rectangle covering both (an empty operand is ignored).
    pub fn bounding(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let left = i64::from(self.x).min(i64::from(other.x));
        let top = i64::from(self.y).min(i64::from(other.y));
        let right = self.right().max(other.right());
        let bottom = self.bottom().max(other.bottom());
        Rect::from_edges(left, top, right, bottom)
    }

    /// Number of pixels covered.
    pub fn area(&self) -> u64 {
        u64::from(self.w) * u64::from(self.h)
    }

    /// The rectangle moved by (dx, dy), or `None` if an edge would leave the i32 range.
    pub fn translate(&self, dx: i64, dy: i64) -> Option<Rect> {
        let x = i32::try_from(i64::from(self.x) + dx).ok()?;
        let y = i32::try_from(i64::from(self.y) + dy).ok()?;
        Some(Rect { x, y, ..*self })
    }
}

/// Most rectangles a [`Region`] keeps before it collapses to their bounding box.
pub const MAX_REGION_RECTS: usize = 16;

/// A set of pixels kept as at most [`MAX_REGION_RECTS`] rectangles. It may cover more than
/// what was added (never less): past the limit, or once the rectangles overlap so much that
/// their areas add up to more than their bounding box, everything merges into that box. So
/// the summed area never exceeds the bounding box's (which keeps refresh work bounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Region {
    rects: Vec<Rect>,
}

impl Region {
    /// Adds the pixels of `rect`.
    pub fn add(&mut self, rect: Rect) {
        if rect.is_empty() || self.rects.iter().any(|r| r.contains(&rect)) {
            return;
        }
        self.rects.retain(|r| !rect.contains(r));
        self.rects.push(rect);
        let summed: u64 = self.rects.iter().map(Rect::area).sum();
        if self.rects.len() > MAX_REGION_RECTS || summed > self.bounding_box().area() {
            let bbox = self.bounding_box();
            self.rects.clear();
            self.rects.push(bbox);
        }
    }

    /// Adds every rectangle of `other`.
    pub fn add_region(&mut self, other: &Region) {
        for r in &other.rects {
            self.add(*r);
        }
    }

    /// Returns whether `rect` shares a pixel with the region.
    pub fn intersects(&self, rect: &Rect) -> bool {
        self.rects.iter().any(|r| r.intersects(rect))
    }

    /// Returns whether the region covers nothing.
    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// The rectangles of the region (they may overlap).
    #[cfg(test)]
    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    /// Empties the region, returning its rectangles.
    pub fn take(&mut self) -> Vec<Rect> {
        std::mem::take(&mut self.rects)
    }

    /// Empties the region.
    pub fn clear(&mut self) {
        self.rects.clear();
    }

    fn bounding_box(&self) -> Rect {
        self.rects
            .iter()
            .fold(Rect::default(), |acc, r| acc.bounding(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_and_contains() {
        let a = Rect::new(0, 0, 10, 10);
        let b = Rect::new(5, 5, 10, 10);
        assert_eq!(a.intersect(&b), Rect::new(5, 5, 5, 5));
        assert!(a.intersects(&b));
        assert!(!a.intersects(&Rect::new(10, 0, 5, 5)));
        assert!(a.contains(&Rect::new(2, 2, 8, 8)));
        assert!(!a.contains(&Rect::new(2, 2, 9, 8)));
        assert_eq!(a.bounding(&b), Rect::new(0, 0, 15, 15));
    }

    #[test]
    fn extreme_coordinates_do_not_overflow() {
        let a = Rect::new(i32::MAX, i32::MAX, u32::MAX, u32::MAX);
        let b = Rect::new(i32::MIN, i32::MIN, u32::MAX, u32::MAX);
        assert!(a.intersect(&b).is_empty());
        assert_eq!(a.translate(1, 0), None);
    }

    #[test]
    fn region_drops_covered_rects_and_collapses_past_the_limit() {
        let mut region = Region::default();
        region.add(Rect::new(0, 0, 4, 4));
        region.add(Rect::new(1, 1, 2, 2));
        assert_eq!(region.rects(), [Rect::new(0, 0, 4, 4)]);

        region.add(Rect::new(0, 0, 8, 8));
        assert_eq!(region.rects(), [Rect::new(0, 0, 8, 8)]);

        for i in 0..16 {
            region.add(Rect::new(100 + i * 10, 0, 1, 1));
        }
        assert_eq!(region.rects(), [Rect::new(0, 0, 251, 8)]);
        assert!(region.intersects(&Rect::new(50, 5, 1, 1)));
    }

    #[test]
    fn heavily_overlapping_rects_merge() {
        let mut region = Region::default();
        region.add(Rect::new(0, 0, 10, 10));
        region.add(Rect::new(20, 0, 10, 10));
        assert_eq!(region.rects().len(), 2);
        region.add(Rect::new(1, 0, 28, 10));
        assert_eq!(region.rects(), [Rect::new(0, 0, 30, 10)]);
    }
}
