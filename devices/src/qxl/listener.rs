// SPDX-License-Identifier: Apache-2.0
//! What the display thread tells about the guest's screen as it changes, for whoever shows it
//! elsewhere (the VMM's SPICE server).
//!
//! The display thread calls a listener after each round of work, never while it holds a lock
//! that a vCPU needs. A listener must return at once: it may queue, drop or merge what it is
//! told, but never wait for a network peer.

use super::cursor::CursorState;
use super::rect::Rect;

/// Follows the primary surface and the cursor.
pub trait DisplayListener: Send {
    /// A primary surface of `width` x `height` now exists (it replaces any earlier one).
    fn primary_created(&mut self, width: u32, height: u32);

    /// The primary surface is gone.
    fn primary_destroyed(&mut self);

    /// `rect` of the primary surface changed; `pixels` are its new contents, row by row, as
    /// 0x00RRGGBB.
    fn update(&mut self, rect: Rect, pixels: &[u32]);

    /// The cursor changed (shape, position or visibility; see `CursorState::serial`).
    fn cursor(&mut self, cursor: &CursorState);

    /// Moves the rectangles the listener wants sent again as updates (for a new viewer, or
    /// after it dropped some) to `out`.
    fn take_refresh(&mut self, out: &mut Vec<Rect>);
}
