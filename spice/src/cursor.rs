// SPDX-License-Identifier: Apache-2.0
//! The cursor channel's messages and queue (reference section 9).
//!
//! The queue never grows past a few messages: consecutive moves collapse into one, and when
//! the client falls behind the queue is replaced by a single SET carrying the whole current
//! state, so the client always ends up with the right shape, position and visibility.

use std::collections::VecDeque;

use crate::channel::Queue;
use crate::display_msg::OutMsg;
use crate::proto::*;
use crate::wire::Writer;

/// Largest cursor edge accepted from the producer.
pub const MAX_CURSOR_EDGE: u16 = 512;
/// Most messages the cursor queue holds before it collapses to the current state.
const MAX_CURSOR_MSGS: usize = 16;
/// Most bytes the cursor queue holds before it collapses to the current state.
const MAX_CURSOR_BYTES: usize = 4 << 20;

/// A cursor image: straight-alpha ARGB pixels, `width * height` of them, rows top first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    /// Width in pixels (at most 512).
    pub width: u16,
    /// Height in pixels (at most 512).
    pub height: u16,
    /// Hotspot column.
    pub hot_x: u16,
    /// Hotspot row.
    pub hot_y: u16,
    /// Pixels as 0xAARRGGBB.
    pub argb: Vec<u32>,
}

impl CursorShape {
    /// Returns why the shape cannot be sent, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err("empty cursor".into());
        }
        if self.width > MAX_CURSOR_EDGE || self.height > MAX_CURSOR_EDGE {
            return Err(format!("cursor {}x{} too large", self.width, self.height));
        }
        if self.argb.len() != usize::from(self.width) * usize::from(self.height) {
            let (w, h, n) = (self.width, self.height, self.argb.len());
            return Err(format!("cursor {w}x{h} given {n} pixels"));
        }
        Ok(())
    }
}

/// What the client should currently show.
#[derive(Debug, Clone, Default)]
pub struct CursorModel {
    /// Current shape and its unique id, if one was set.
    pub shape: Option<(CursorShape, u64)>,
    /// Hotspot position in surface pixels.
    pub x: i32,
    /// Hotspot position in surface pixels.
    pub y: i32,
    /// Whether the cursor is shown.
    pub visible: bool,
}

/// Point16, saturating.
fn point16(w: &mut Writer, x: i32, y: i32) {
    let clamp = |v: i32| i16::try_from(v).unwrap_or(if v < 0 { i16::MIN } else { i16::MAX });
    w.i16(clamp(x)).i16(clamp(y));
}

/// A `Cursor`: flags NONE, or an ALPHA shape.
fn cursor(w: &mut Writer, shape: Option<&(CursorShape, u64)>) {
    let Some((shape, unique)) = shape else {
        w.u16(CURSOR_FLAGS_NONE);
        return;
    };
    w.u16(0).u64(*unique).u8(CURSOR_TYPE_ALPHA);
    w.u16(shape.width).u16(shape.height);
    w.u16(shape.hot_x.min(shape.width - 1))
        .u16(shape.hot_y.min(shape.height - 1));
    for p in &shape.argb {
        w.u32(*p);
    }
}

/// CURSOR_INIT with the current state (no trail).
pub fn init(model: &CursorModel) -> OutMsg {
    let mut w = Writer::with_capacity(64);
    point16(&mut w, model.x, model.y);
    w.u16(0).u16(0).u8(u8::from(model.visible));
    cursor(&mut w, model.shape.as_ref());
    OutMsg::new(MSG_CURSOR_INIT, w.finish())
}

/// CURSOR_SET with the current state.
pub fn set(model: &CursorModel) -> OutMsg {
    let mut w = Writer::with_capacity(64);
    point16(&mut w, model.x, model.y);
    w.u8(u8::from(model.visible));
    cursor(&mut w, model.shape.as_ref());
    OutMsg::new(MSG_CURSOR_SET, w.finish())
}

/// CURSOR_MOVE.
pub fn moved(x: i32, y: i32) -> OutMsg {
    let mut w = Writer::with_capacity(4);
    point16(&mut w, x, y);
    OutMsg::new(MSG_CURSOR_MOVE, w.finish())
}

/// CURSOR_HIDE.
pub fn hide() -> OutMsg {
    OutMsg::new(MSG_CURSOR_HIDE, Vec::new())
}

/// The cursor channel's outgoing queue.
#[derive(Debug, Default)]
pub struct CursorQueue {
    items: VecDeque<OutMsg>,
    bytes: usize,
}

impl CursorQueue {
    /// Queues `msg`, which already is reflected in `model`.
    pub fn push(&mut self, msg: OutMsg, model: &CursorModel) {
        let is_move = msg.msg_type == MSG_CURSOR_MOVE;
        if is_move
            && self
                .items
                .back()
                .is_some_and(|m| m.msg_type == MSG_CURSOR_MOVE)
        {
            self.items.pop_back();
        }
        let full =
            self.items.len() >= MAX_CURSOR_MSGS || self.bytes + msg.body.len() > MAX_CURSOR_BYTES;
        let msg = if full {
            self.items.clear();
            set(model)
        } else {
            msg
        };
        self.items.push_back(msg);
        self.bytes = self.items.iter().map(|m| m.body.len()).sum();
    }

    /// Messages queued.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

impl Queue for CursorQueue {
    fn pop(&mut self) -> Option<OutMsg> {
        let msg = self.items.pop_front()?;
        self.bytes -= msg.body.len();
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_2x2() -> CursorShape {
        CursorShape {
            width: 2,
            height: 2,
            hot_x: 1,
            hot_y: 0,
            argb: vec![0xff00_0000, 0x80ff_0000, 0x0000_ff00, 0xffff_ffff],
        }
    }

    #[test]
    fn init_without_shape_is_11_bytes() {
        let model = CursorModel {
            x: 3,
            y: -2,
            visible: true,
            ..CursorModel::default()
        };
        let msg = init(&model);
        assert_eq!(msg.msg_type, 101);
        assert_eq!(msg.body, [3, 0, 0xfe, 0xff, 0, 0, 0, 0, 1, 1, 0]);
    }

    #[test]
    fn set_of_a_2x2_alpha_cursor_is_40_bytes() {
        let model = CursorModel {
            shape: Some((shape_2x2(), 0x1122)),
            x: 100_000,
            y: 5,
            visible: true,
        };
        let msg = set(&model);
        assert_eq!(msg.msg_type, 103);
        let mut expect = vec![0xff, 0x7f, 5, 0, 1, 0, 0, 0x22, 0x11, 0, 0, 0, 0, 0, 0];
        expect.extend_from_slice(&[0, 2, 0, 2, 0, 1, 0, 0, 0]);
        expect.extend_from_slice(&[0, 0, 0, 0xff, 0, 0, 0xff, 0x80]);
        expect.extend_from_slice(&[0, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(msg.body, expect);
        assert_eq!(moved(1, 2), OutMsg::new(104, vec![1, 0, 2, 0]));
        assert_eq!(hide(), OutMsg::new(105, vec![]));
    }

    #[test]
    fn shape_checks() {
        assert!(shape_2x2().check().is_ok());
        let mut bad = shape_2x2();
        bad.argb.pop();
        assert!(bad.check().is_err());
        bad.width = 0;
        assert!(bad.check().is_err());
        bad.width = 513;
        assert!(bad.check().is_err());
    }

    #[test]
    fn moves_collapse_and_overflow_becomes_one_set() {
        let mut model = CursorModel::default();
        let mut q = CursorQueue::default();
        for i in 0..100 {
            model.x = i;
            q.push(moved(i, 0), &model);
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some(moved(99, 0)));

        model.shape = Some((shape_2x2(), 1));
        for _ in 0..100 {
            q.push(set(&model), &model);
            q.push(hide(), &model);
        }
        assert!(q.len() <= MAX_CURSOR_MSGS);
        model.visible = true;
        model.x = 7;
        for _ in 0..MAX_CURSOR_MSGS {
            q.push(set(&model), &model);
        }
        assert_eq!(q.items.back(), Some(&set(&model)));
    }
}
