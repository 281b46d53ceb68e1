// SPDX-License-Identifier: Apache-2.0
//! The display channel's outgoing queue and the slow-client policy.
//!
//! The producer (the VMM's display thread) pushes updates; the channel's writer thread pops
//! them. Neither ever waits for the other beyond one short lock. Memory is bounded:
//!
//! - Ordinary updates (fills, copies, images) are queued while the queue holds fewer than
//!   [`MAX_QUEUE_BYTES`] and [`MAX_QUEUE_MSGS`]. When one would not fit, every queued ordinary
//!   update is dropped and its destination goes into the *dirty* region, as does every later
//!   update until the queue has drained ("overflow").
//! - When the writer takes the last queued message while the dirty region is not empty, the
//!   region becomes *owed*: the producer is asked (refresh callback) to send those pixels, and
//!   `take_refresh` hands them out. Rectangles handed out are *pending* until the images that
//!   cover them arrive. Those refresh images are not held to the soft budget (they bring the
//!   client up to date; dropping them again could starve it), only to a hard cap of the soft
//!   budget plus twice the surface size.
//! - While any region is dirty, owed or pending, the client's copy of those pixels is stale,
//!   so a `copy_bits` reading from them is turned into a refresh of its destination.
//! - Surface and mark messages are never dropped on their own: a mode change throws away
//!   everything queued for the old surface and starts over with destroy, create, a full
//!   refresh and a mark, so the queue never holds more than a few of them.

use std::collections::VecDeque;

use crate::channel::Queue;
use crate::display_msg::{self, ImageCodec, OutMsg};
use crate::proto::{MSG_DISPLAY_SURFACE_CREATE, MSG_DISPLAY_SURFACE_DESTROY};
use crate::region::Region;
use crate::Rect;

/// Soft budget of queued bytes per client for ordinary updates.
pub const MAX_QUEUE_BYTES: usize = 4 << 20;
/// Soft budget of queued messages per client.
pub const MAX_QUEUE_MSGS: usize = 1024;

/// What a queued message is, for the drop policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Surface create/destroy and mark: never dropped alone.
    Control,
    /// An ordinary update of this destination: dropped on overflow.
    Draw(Rect),
    /// An image answering a refresh: kept on overflow, dropped only past the hard cap.
    Refresh(Rect),
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    msg: OutMsg,
}

/// What the producer should do with an image it is about to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePlan {
    /// Nothing to send: no surface, nothing visible, or the rect went to the dirty region.
    Skip,
    /// Encode with this codec; `refresh` tells whether it answers a pending refresh.
    Send {
        /// The codec the client accepts.
        codec: ImageCodec,
        /// Whether the image covers a pending refresh rectangle.
        refresh: bool,
    },
}

/// Per-client display queue; see the module documentation for the policy.
#[derive(Debug)]
pub struct DisplayQueue {
    items: VecDeque<Item>,
    bytes: usize,
    codec: ImageCodec,
    /// Whether the client sent DISPLAY_INIT (nothing is queued before).
    initialized: bool,
    /// The primary surface as the client will know it once the queue is sent.
    surface: Option<Rect>,
    /// Whether the client has a surface after every message already popped.
    sent_surface: bool,
    dirty: Region,
    owed: Region,
    pending: Vec<Rect>,
    mark_owed: bool,
    refresh_signal: bool,
}

impl DisplayQueue {
    /// Creates the queue of a display channel whose client decodes `codec`.
    pub fn new(codec: ImageCodec) -> Self {
        DisplayQueue {
            items: VecDeque::new(),
            bytes: 0,
            codec,
            initialized: false,
            surface: None,
            sent_surface: false,
            dirty: Region::default(),
            owed: Region::default(),
            pending: Vec::new(),
            mark_owed: false,
            refresh_signal: false,
        }
    }

    /// The client sent DISPLAY_INIT: start with the current primary, if any.
    pub fn init(&mut self, primary: Option<(u32, u32)>) {
        if self.initialized {
            return;
        }
        self.initialized = true;
        if let Some((w, h)) = primary {
            self.primary_created(w, h);
        }
    }

    /// The producer created a primary surface (a mode change if one existed).
    pub fn primary_created(&mut self, width: u32, height: u32) {
        if !self.initialized {
            return;
        }
        self.reset_to(None);
        let full = Rect::new(0, 0, width, height);
        self.surface = Some(full);
        self.push(Kind::Control, display_msg::surface_create(width, height));
        self.owed.add(full);
        self.mark_owed = true;
        self.refresh_signal = true;
    }

    /// The producer destroyed the primary surface.
    pub fn primary_destroyed(&mut self) {
        if self.initialized {
            self.reset_to(None);
        }
    }

    /// Drops everything queued and owed, leaving only a destroy if the client has a surface.
    fn reset_to(&mut self, surface: Option<Rect>) {
        self.items.clear();
        self.bytes = 0;
        self.dirty.clear();
        self.owed.clear();
        self.pending.clear();
        self.mark_owed = false;
        self.surface = surface;
        if self.sent_surface {
            self.push(Kind::Control, display_msg::surface_destroy());
        }
    }

    /// The visible part of `rect`, or `None` when nothing should be drawn (no client
    /// initialisation, no surface, or nothing visible).
    pub fn clip(&self, rect: Rect) -> Option<Rect> {
        let surface = self.surface.filter(|_| self.initialized)?;
        Some(surface.intersect(&rect)).filter(|r| !r.is_empty())
    }

    /// Returns whether updates are going to the dirty region.
    pub fn in_overflow(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Decides how to handle an image of the (clipped) `dest`.
    pub fn plan_image(&mut self, dest: Rect) -> ImagePlan {
        let refresh = self.pending.iter().any(|p| dest.contains(p));
        if !refresh && self.in_overflow() {
            self.dirty.add(dest);
            return ImagePlan::Skip;
        }
        ImagePlan::Send {
            codec: self.codec,
            refresh,
        }
    }

    /// Queues an ordinary update of the (clipped) `dest`, or adds `dest` to the dirty region
    /// when the client is behind.
    pub fn push_draw(&mut self, dest: Rect, msg: OutMsg) {
        if self.in_overflow() {
            self.dirty.add(dest);
            return;
        }
        let full = !self.items.is_empty()
            && (self.bytes + msg.body.len() > MAX_QUEUE_BYTES
                || self.items.len() >= MAX_QUEUE_MSGS);
        if full {
            self.overflow(false, dest);
            return;
        }
        self.push(Kind::Draw(dest), msg);
    }

    /// Queues the bands of an image that answers a refresh of `dest`.
    pub fn push_refresh(&mut self, dest: Rect, bands: Vec<(Rect, OutMsg)>) {
        self.pending.retain(|p| !dest.contains(p));
        let size: usize = bands.iter().map(|(_, m)| m.body.len()).sum();
        if self.bytes + size > self.hard_cap() {
            self.overflow(true, dest);
            return;
        }
        for (band, msg) in bands {
            self.push(Kind::Refresh(band), msg);
        }
        self.maybe_mark();
    }

    /// Queues a screen-to-screen copy from `src` to `dest` (both clipped to the surface, same
    /// size), or refreshes `dest` instead when the client's copy of `src` is stale.
    pub fn push_copy_bits(&mut self, src: Rect, dest: Rect, msg: OutMsg) {
        let stale = self.dirty.intersects(&src)
            || self.owed.intersects(&src)
            || self.pending.iter().any(|p| p.intersects(&src));
        if !stale {
            self.push_draw(dest, msg);
        } else if self.in_overflow() {
            self.dirty.add(dest);
        } else {
            self.owe(dest);
        }
    }

    /// Asks the producer for the pixels of `rect` (used when an update cannot be expressed).
    pub fn owe(&mut self, rect: Rect) {
        if let Some(rect) = self.clip(rect) {
            self.owed.add(rect);
            self.refresh_signal = true;
        }
    }

    /// Hands the owed rectangles to the producer. Rectangles handed out earlier and still not
    /// answered are handed out again.
    pub fn take_refresh(&mut self, out: &mut Vec<Rect>) {
        for p in self.pending.drain(..) {
            self.owed.add(p);
        }
        self.pending = self.owed.take();
        log::debug!("spice: refresh handed out: {:?}", self.pending);
        out.extend_from_slice(&self.pending);
    }

    /// Returns (once) whether the producer must be told that a refresh is owed.
    pub fn take_refresh_signal(&mut self) -> bool {
        std::mem::take(&mut self.refresh_signal) && !self.owed.is_empty()
    }

    /// Takes the next message to send. When this drains a queue that overflowed, the dirty
    /// region becomes owed and the producer is signalled.
    pub fn pop(&mut self) -> Option<OutMsg> {
        let item = self.items.pop_front()?;
        self.bytes -= item.msg.body.len();
        match item.msg.msg_type {
            MSG_DISPLAY_SURFACE_CREATE => self.sent_surface = true,
            MSG_DISPLAY_SURFACE_DESTROY => self.sent_surface = false,
            _ => {}
        }
        self.settle();
        Some(item.msg)
    }

    /// Ends an overflow once nothing is queued: the dirty region becomes owed.
    fn settle(&mut self) {
        if self.items.is_empty() && self.in_overflow() {
            let dirty = std::mem::take(&mut self.dirty);
            log::debug!("spice: display queue drained, refresh owed for {dirty:?}");
            self.owed.add_region(&dirty);
            self.refresh_signal = true;
        }
    }

    /// Returns whether a message is waiting.
    #[cfg(test)]
    pub fn has_output(&self) -> bool {
        !self.items.is_empty()
    }

    /// Bytes of message bodies queued.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    fn push(&mut self, kind: Kind, msg: OutMsg) {
        self.bytes += msg.body.len();
        self.items.push_back(Item { kind, msg });
    }

    /// Drops queued updates into the dirty region with `dest`, the update that did not fit:
    /// ordinary ones always, refresh images too when `refreshes` is set. If that empties the
    /// queue, the refresh is owed at once (no later pop would notice).
    fn overflow(&mut self, refreshes: bool, dest: Rect) {
        let mut dropped = Region::default();
        self.items.retain(|item| match item.kind {
            Kind::Draw(r) => {
                dropped.add(r);
                false
            }
            Kind::Refresh(r) if refreshes => {
                dropped.add(r);
                false
            }
            _ => true,
        });
        self.bytes = self.items.iter().map(|i| i.msg.body.len()).sum();
        self.dirty.add_region(&dropped);
        self.dirty.add(dest);
        log::debug!("spice: display client is behind, updates collapse into a refresh");
        self.settle();
    }

    /// Queues the MARK owed since the last surface creation once nothing is left to refresh.
    fn maybe_mark(&mut self) {
        let done = self.owed.is_empty() && self.pending.is_empty() && self.dirty.is_empty();
        if self.mark_owed && done {
            self.mark_owed = false;
            self.push(Kind::Control, display_msg::mark());
        }
    }

    /// Soft budget plus twice the raw surface size: the most refresh images may take.
    fn hard_cap(&self) -> usize {
        let area = self.surface.map_or(0, |s| s.area());
        MAX_QUEUE_BYTES + usize::try_from(area * 8).unwrap_or(usize::MAX)
    }
}

impl Queue for DisplayQueue {
    fn pop(&mut self) -> Option<OutMsg> {
        DisplayQueue::pop(self)
    }

    fn take_signal(&mut self) -> bool {
        self.take_refresh_signal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display_msg::{draw_copy, draw_fill, Pixels};
    use crate::proto::*;

    fn types(q: &mut DisplayQueue) -> Vec<u16> {
        std::iter::from_fn(|| q.pop()).map(|m| m.msg_type).collect()
    }

    fn image(dest: Rect) -> Vec<(Rect, OutMsg)> {
        let data = vec![0u32; (dest.w * dest.h) as usize];
        let pixels = Pixels {
            data: &data,
            stride: dest.w as usize,
        };
        draw_copy(dest, pixels, (0, 0), ImageCodec::Bitmap, &mut 0)
    }

    fn started(w: u32, h: u32) -> DisplayQueue {
        let mut q = DisplayQueue::new(ImageCodec::Bitmap);
        q.init(Some((w, h)));
        assert!(q.take_refresh_signal());
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(0, 0, w, h)]);
        q.push_refresh(owed[0], image(owed[0]));
        q
    }

    #[test]
    fn nothing_is_queued_before_display_init() {
        let mut q = DisplayQueue::new(ImageCodec::Bitmap);
        q.primary_created(64, 64);
        assert_eq!(q.clip(Rect::new(0, 0, 8, 8)), None);
        assert!(!q.has_output());
    }

    #[test]
    fn start_sends_create_then_full_image_then_mark() {
        let mut q = started(64, 32);
        let expect = [
            MSG_DISPLAY_SURFACE_CREATE,
            MSG_DISPLAY_DRAW_COPY,
            MSG_DISPLAY_MARK,
        ];
        assert_eq!(types(&mut q), expect);
        assert!(!q.take_refresh_signal());
    }

    #[test]
    fn clip_keeps_draws_inside_the_surface() {
        let q = started(64, 32);
        assert_eq!(
            q.clip(Rect::new(60, -4, 10, 10)),
            Some(Rect::new(60, 0, 4, 6))
        );
        assert_eq!(q.clip(Rect::new(64, 0, 10, 10)), None);
    }

    #[test]
    fn overflow_drops_queued_draws_into_a_refresh() {
        // The surface, its first image and the mark stay queued: they are never dropped.
        let mut q = started(256, 256);
        let kept = q.queued_bytes();
        let fill = |i: i32| draw_fill(Rect::new(0, 0, 1, 1), u32::try_from(i).unwrap());
        let mut pushed = 0;
        while !q.in_overflow() {
            q.push_draw(Rect::new(pushed % 256, 0, 1, 1), fill(pushed));
            pushed += 1;
        }
        assert_eq!(pushed as usize, MAX_QUEUE_MSGS - 3 + 1);
        assert_eq!(q.items.len(), 3);
        assert_eq!(q.queued_bytes(), kept);

        // Later updates only grow the dirty region, which stays bounded.
        for i in 0..10_000 {
            q.push_draw(Rect::new(i % 256, i % 7, 1, 1), fill(i));
        }
        assert!(q.dirty.rects().len() <= crate::region::MAX_REGION_RECTS);
        assert!(!q.take_refresh_signal());

        let expect = [
            MSG_DISPLAY_SURFACE_CREATE,
            MSG_DISPLAY_DRAW_COPY,
            MSG_DISPLAY_MARK,
        ];
        assert_eq!(types(&mut q), expect);
        assert!(q.take_refresh_signal());
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(0, 0, 256, 7)]);
    }

    #[test]
    fn overflow_that_empties_the_queue_owes_the_refresh_at_once() {
        let mut q = started(1024, 1024);
        types(&mut q);
        for i in 0..1024 {
            q.push_draw(
                Rect::new(i % 1000, 0, 1, 1),
                draw_fill(Rect::new(0, 0, 1, 1), 0),
            );
        }
        q.push_draw(
            Rect::new(5, 500, 1, 1),
            draw_fill(Rect::new(5, 500, 1, 1), 0),
        );
        assert!(!q.in_overflow());
        assert!(q.take_refresh_signal());
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        assert!(owed.len() <= crate::region::MAX_REGION_RECTS);
        for pixel in [
            Rect::new(0, 0, 1, 1),
            Rect::new(999, 0, 1, 1),
            Rect::new(5, 500, 1, 1),
        ] {
            assert!(owed.iter().any(|r| r.contains(&pixel)), "{pixel:?} owed");
        }
    }

    #[test]
    fn refresh_is_owed_once_the_queue_drains() {
        let mut q = started(256, 256);
        types(&mut q);
        // A refresh image is kept across an overflow, so the queue does not drain at once.
        q.push_refresh(Rect::new(100, 100, 8, 8), image(Rect::new(100, 100, 8, 8)));
        let big = draw_fill(Rect::new(0, 0, 1, 1), 0);
        q.push_draw(Rect::new(0, 0, 1, 1), big.clone());
        q.bytes = MAX_QUEUE_BYTES; // pretend the queued messages are huge
        q.push_draw(Rect::new(10, 10, 5, 5), big.clone());
        assert!(q.in_overflow());
        assert!(!q.take_refresh_signal());
        assert_eq!(types(&mut q), [MSG_DISPLAY_DRAW_COPY]);
        assert!(q.take_refresh_signal());
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(0, 0, 1, 1), Rect::new(10, 10, 5, 5)]);
        assert!(!q.in_overflow());
    }

    #[test]
    fn copy_bits_from_stale_pixels_becomes_a_refresh() {
        let mut q = started(256, 256);
        types(&mut q);
        q.owe(Rect::new(0, 0, 10, 10));
        assert!(q.take_refresh_signal());

        let dest = Rect::new(100, 100, 10, 10);
        let msg = display_msg::copy_bits(5, 5, dest);
        q.push_copy_bits(Rect::new(5, 5, 10, 10), dest, msg.clone());
        assert!(!q.has_output());
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(0, 0, 10, 10), dest]);

        // Still pending (handed out, not answered): still stale.
        let dest2 = Rect::new(200, 200, 4, 4);
        q.push_copy_bits(Rect::new(102, 102, 4, 4), dest2, msg.clone());
        assert!(!q.has_output());

        // Answered: copies from there are sent as copies again.
        q.push_refresh(dest, image(dest));
        q.push_refresh(Rect::new(0, 0, 10, 10), image(Rect::new(0, 0, 10, 10)));
        owed.clear();
        q.take_refresh(&mut owed);
        assert_eq!(owed, [dest2]);
        q.push_refresh(dest2, image(dest2));
        types(&mut q);
        q.push_copy_bits(Rect::new(102, 102, 4, 4), dest2, msg);
        assert_eq!(types(&mut q), [MSG_DISPLAY_COPY_BITS]);
    }

    #[test]
    fn mode_change_discards_the_old_surface_updates() {
        let mut q = started(64, 64);
        q.push_draw(Rect::new(0, 0, 4, 4), draw_fill(Rect::new(0, 0, 4, 4), 1));
        assert_eq!(q.pop().unwrap().msg_type, MSG_DISPLAY_SURFACE_CREATE);

        q.primary_destroyed();
        q.primary_created(32, 16);
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(0, 0, 32, 16)]);
        q.push_refresh(owed[0], image(owed[0]));
        let expect = [
            MSG_DISPLAY_SURFACE_DESTROY,
            MSG_DISPLAY_SURFACE_CREATE,
            MSG_DISPLAY_DRAW_COPY,
            MSG_DISPLAY_MARK,
        ];
        assert_eq!(types(&mut q), expect);
    }

    #[test]
    fn repeated_mode_changes_stay_bounded() {
        let mut q = started(64, 64);
        types(&mut q);
        for i in 0..1000 {
            q.primary_destroyed();
            q.primary_created(64 + i, 64);
        }
        assert_eq!(q.items.len(), 2);
        assert_eq!(
            types(&mut q),
            [MSG_DISPLAY_SURFACE_DESTROY, MSG_DISPLAY_SURFACE_CREATE]
        );
    }

    #[test]
    fn destroy_before_the_create_was_sent_sends_nothing() {
        let mut q = DisplayQueue::new(ImageCodec::Bitmap);
        q.init(Some((8, 8)));
        q.primary_destroyed();
        assert!(!q.has_output());
    }

    #[test]
    fn refresh_images_past_the_hard_cap_fall_back_to_dirty() {
        let mut q = started(16, 16);
        types(&mut q);
        q.owe(Rect::new(0, 0, 16, 16));
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        q.bytes = q.hard_cap();
        q.push_refresh(owed[0], image(owed[0]));
        assert!(!q.has_output());
        assert!(q.take_refresh_signal());
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(0, 0, 16, 16), Rect::new(0, 0, 16, 16)]);
    }

    #[test]
    fn unanswered_refresh_rects_are_handed_out_again() {
        let mut q = started(64, 64);
        types(&mut q);
        q.owe(Rect::new(1, 2, 3, 4));
        let mut owed = Vec::new();
        q.take_refresh(&mut owed);
        q.take_refresh(&mut owed);
        assert_eq!(owed, [Rect::new(1, 2, 3, 4), Rect::new(1, 2, 3, 4)]);
    }
}
