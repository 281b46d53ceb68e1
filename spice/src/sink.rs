// SPDX-License-Identifier: Apache-2.0
//! The producer side: [`DisplaySink`], used by the VMM's display thread.
//!
//! The sink and the channels meet in the [`Hub`]: the current primary surface and cursor, and
//! the outboxes of the connected display and cursor channels. Lock order is hub, then outbox;
//! writer threads only take outbox locks, and no lock is held across socket I/O, so the
//! producer never waits for a client.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::channel::Outbox;
use crate::cursor::{self, CursorModel, CursorQueue, CursorShape};
use crate::display_msg::{self, Pixels};
use crate::display_queue::{DisplayQueue, ImagePlan};
use crate::log_limit::LogLimiter;
use crate::Rect;

/// Largest primary surface edge accepted.
pub const MAX_SURFACE_EDGE: u32 = 16384;

/// State shared by the producer and the channels.
#[derive(Debug, Default)]
pub struct HubState {
    /// The current primary surface size.
    pub primary: Option<(u32, u32)>,
    /// The current cursor.
    pub cursor: CursorModel,
    /// The connected display channel.
    pub display: Option<Arc<Outbox<DisplayQueue>>>,
    /// The connected cursor channel.
    pub cursor_out: Option<Arc<Outbox<CursorQueue>>>,
    next_id: u64,
    log: LogLimiter,
}

/// Meeting point of the producer and the channels.
#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

impl Hub {
    /// Locks the hub state.
    pub fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Producer side of the server, for ONE display thread. Every method returns at once: it
/// never blocks on a socket or on a lock held across I/O. Drawing calls made while no client
/// is connected only update what a future client will be sent (surface size, cursor).
///
/// Pixels are 32-bit xRGB (0x00RRGGBB). Rectangles are clipped to the primary surface.
#[derive(Debug, Clone)]
pub struct DisplaySink {
    hub: Arc<Hub>,
}

impl DisplaySink {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        DisplaySink { hub }
    }

    /// A primary surface of `width` x `height` xRGB pixels now exists (replacing any older
    /// one: a mode change). The client gets the new surface and a full refresh is owed.
    pub fn primary_created(&self, width: u32, height: u32) {
        let mut hub = self.hub.lock();
        let bad = |e: u32| e == 0 || e > MAX_SURFACE_EDGE;
        if bad(width) || bad(height) {
            hub.log
                .warn(format_args!("primary surface {width}x{height} refused"));
            return;
        }
        hub.primary = Some((width, height));
        if let Some(out) = &hub.display {
            out.with(|q| q.primary_created(width, height));
        }
    }

    /// The primary surface is gone.
    pub fn primary_destroyed(&self) {
        let mut hub = self.hub.lock();
        hub.primary = None;
        if let Some(out) = &hub.display {
            out.with(DisplayQueue::primary_destroyed);
        }
    }

    /// Fills `rect` with the solid xRGB `color`.
    pub fn fill(&self, rect: Rect, color: u32) {
        let hub = self.hub.lock();
        let Some(out) = &hub.display else { return };
        out.with(|q| {
            if let Some(dest) = q.clip(rect) {
                q.push_draw(dest, display_msg::draw_fill(dest, color));
            }
        });
    }

    /// Copies the area of `dest`'s size whose top-left corner is (src_x, src_y) to `dest`
    /// (scrolling). Source and destination may overlap.
    pub fn copy_bits(&self, src_x: i32, src_y: i32, dest: Rect) {
        let hub = self.hub.lock();
        let Some(out) = &hub.display else { return };
        out.with(|q| {
            let Some(d) = q.clip(dest) else { return };
            let shift = (
                i64::from(src_x) - i64::from(dest.x),
                i64::from(src_y) - i64::from(dest.y),
            );
            match d.translate(shift.0, shift.1) {
                Some(src) if q.clip(src) == Some(src) => {
                    q.push_copy_bits(src, d, display_msg::copy_bits(src.x, src.y, d));
                }
                // Part of the source is off the surface: send the result as pixels instead.
                _ => q.owe(d),
            }
        });
    }

    /// Paints `rect` with `pixels`: `rect.w * rect.h` xRGB words, row-major, top row first.
    pub fn image(&self, rect: Rect, pixels: &[u32]) {
        let mut hub = self.hub.lock();
        if rect.area() != pixels.len() as u64 {
            let (w, h, n) = (rect.w, rect.h, pixels.len());
            hub.log
                .warn(format_args!("image {w}x{h} given {n} pixels, dropped"));
            return;
        }
        let Some(out) = hub.display.clone() else {
            return;
        };
        let plan = out.with(|q| q.clip(rect).map(|d| (d, q.plan_image(d))));
        let Some((dest, ImagePlan::Send { codec, refresh })) = plan else {
            return;
        };

        let src = Pixels {
            data: pixels,
            stride: rect.w as usize,
        };
        // dest is rect clipped, so both offsets are non-negative and inside rect.
        let offset_of = |d: i32, r: i32| usize::try_from(i64::from(d) - i64::from(r)).unwrap_or(0);
        let offset = (offset_of(dest.x, rect.x), offset_of(dest.y, rect.y));
        let bands = display_msg::draw_copy(dest, src, offset, codec, &mut hub.next_id);
        out.with(|q| match refresh {
            true => q.push_refresh(dest, bands),
            false => bands.into_iter().for_each(|(r, m)| q.push_draw(r, m)),
        });
    }

    /// Sets the cursor shape, its hotspot position and whether it is shown.
    pub fn cursor_set(&self, shape: &CursorShape, x: i32, y: i32, visible: bool) {
        let mut hub = self.hub.lock();
        if let Err(e) = shape.check() {
            hub.log.warn(format_args!("{e}, dropped"));
            return;
        }
        hub.next_id += 1;
        let id = hub.next_id;
        hub.cursor = CursorModel {
            shape: Some((shape.clone(), id)),
            x,
            y,
            visible,
        };
        let msg = cursor::set(&hub.cursor);
        push_cursor(&hub, msg);
    }

    /// Moves the cursor hotspot to (x, y).
    pub fn cursor_move(&self, x: i32, y: i32) {
        let mut hub = self.hub.lock();
        hub.cursor.x = x;
        hub.cursor.y = y;
        push_cursor(&hub, cursor::moved(x, y));
    }

    /// Hides the cursor (a later `cursor_set` shows it again).
    pub fn cursor_hide(&self) {
        let mut hub = self.hub.lock();
        hub.cursor.visible = false;
        push_cursor(&hub, cursor::hide());
    }

    /// Replaces `out` with the rectangles the producer must now send with [`image`]: the full
    /// screen for a new client, or the dirty region left by a collapsed queue. Empty when
    /// nothing is owed. Each rectangle should be answered by exactly one `image` call.
    ///
    /// [`image`]: DisplaySink::image
    pub fn take_refresh(&self, out: &mut Vec<Rect>) {
        out.clear();
        let hub = self.hub.lock();
        if let Some(display) = &hub.display {
            display.with(|q| q.take_refresh(out));
        }
    }

    /// Bytes of display messages queued for the client and not yet handed to its socket (0
    /// without a client): a measure of how far behind the client is.
    pub fn queued_bytes(&self) -> usize {
        let hub = self.hub.lock();
        hub.display
            .as_ref()
            .map_or(0, |d| d.with(|q| q.queued_bytes()))
    }

    /// Returns whether a display client is connected.
    pub fn has_client(&self) -> bool {
        self.hub.lock().display.is_some()
    }
}

fn push_cursor(hub: &HubState, msg: display_msg::OutMsg) {
    if let Some(out) = &hub.cursor_out {
        out.with(|q| q.push(msg, &hub.cursor));
    }
}
