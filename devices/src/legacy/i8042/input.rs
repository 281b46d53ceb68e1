// SPDX-License-Identifier: Apache-2.0
//! The handle through which the VMM's threads (the control socket, a SPICE inputs channel)
//! type keys and move the mouse.
//!
//! Each call takes the i8042's lock only to queue bytes and raise an interrupt (an eventfd
//! write), never while waiting on anything else; LEDs and buttons are read without the lock.
//!
//! A SPICE inputs channel maps onto it directly: `KEY_DOWN`/`KEY_UP` codes go to
//! [`InputHandle::key_packed`] (they already hold the release bit), `MOUSE_MOTION` to
//! [`InputHandle::mouse_motion`], `MOUSE_PRESS`/`MOUSE_RELEASE` to [`InputHandle::mouse_button`]
//! (SPICE numbers the buttons 1 left, 2 middle, 3 right, 4 wheel up, 5 wheel down, and its
//! `buttons_state` mask uses the `BUTTON_*` layout), and [`InputHandle::leds`] gives the lock
//! state for `INPUTS_INIT` and `KEY_MODIFIERS`.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;

use super::mouse::{PS2_LEFT, PS2_MIDDLE, PS2_RIGHT};
use super::scancode::{PREFIX_E0, SET1_BREAK};
use super::I8042;

/// Button mask bit of the left button (the layout SPICE's `buttons_state` uses).
pub const BUTTON_LEFT: u32 = 1 << 0;
/// Button mask bit of the middle button.
pub const BUTTON_MIDDLE: u32 = 1 << 1;
/// Button mask bit of the right button.
pub const BUTTON_RIGHT: u32 = 1 << 2;

/// Keyboard LED bit: Scroll Lock (the bits of the keyboard's set-LEDs command, 0xed).
pub const LED_SCROLL_LOCK: u8 = 1 << 0;
/// Keyboard LED bit: Num Lock.
pub const LED_NUM_LOCK: u8 = 1 << 1;
/// Keyboard LED bit: Caps Lock.
pub const LED_CAPS_LOCK: u8 = 1 << 2;

/// The key code of Pause for [`InputHandle::key`]: its set 1 make sequence e1 1d 45.
pub const PAUSE_KEY: u32 = 0xe1_1d45;

/// A mouse button or wheel direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MouseButton {
    /// The left button.
    Left,
    /// The middle button (or wheel click).
    Middle,
    /// The right button.
    Right,
    /// One wheel notch away from the user: a press scrolls up.
    WheelUp,
    /// One wheel notch towards the user: a press scrolls down.
    WheelDown,
    /// The side (back) button; a PS/2 IntelliMouse has none, so it is ignored.
    Side,
    /// The extra (forward) button; ignored like [`MouseButton::Side`].
    Extra,
}

impl MouseButton {
    /// The button's bit in a button mask, if it has one.
    pub fn mask(self) -> u32 {
        match self {
            MouseButton::Left => BUTTON_LEFT,
            MouseButton::Middle => BUTTON_MIDDLE,
            MouseButton::Right => BUTTON_RIGHT,
            _ => 0,
        }
    }
}

/// A key code that is not a set 1 key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0:#x} is not a set 1 key code (0x01-0x7f, 0xe001-0xe07f or 0xe11d45)")]
pub struct InvalidKey(pub u32);

/// A thread-safe handle that feeds the i8042's keyboard and mouse.
#[derive(Clone)]
pub struct InputHandle {
    i8042: Arc<Mutex<I8042>>,
    leds: Arc<AtomicU8>,
    buttons: Arc<AtomicU32>,
}

impl InputHandle {
    /// Creates a handle for `i8042`, the controller as it sits on the I/O bus.
    pub fn new(i8042: Arc<Mutex<I8042>>) -> Self {
        let leds = lock(&i8042).leds.clone();
        InputHandle {
            i8042,
            leds,
            buttons: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Presses (`down`) or releases the key with set 1 code `code`: a make code 0x01-0x7f,
    /// 0xe0xx for a key with an 0xe0 prefix (0xe048 is Up) or [`PAUSE_KEY`]. A release sends
    /// the make bytes with bit 7 set (e0 c8; Pause's is e1 9d c5).
    pub fn key(&self, code: u32, down: bool) -> Result<(), InvalidKey> {
        let bytes = set1_bytes(code, down).ok_or(InvalidKey(code))?;
        self.key_bytes(&bytes);
        Ok(())
    }

    /// Types raw set 1 bytes (prefixes included, releases with bit 7 set), such as one key
    /// event of a SPICE client.
    pub fn key_bytes(&self, set1: &[u8]) {
        if !set1.is_empty() {
            lock(&self.i8042).type_set1(set1);
        }
    }

    /// Types the set 1 bytes packed in `code` least significant first and ended by the first
    /// zero byte: the `KEY_DOWN`/`KEY_UP` code of SPICE's inputs channel (0xc8e0 releases Up).
    pub fn key_packed(&self, code: u32) {
        let bytes: Vec<u8> = code
            .to_le_bytes()
            .into_iter()
            .take_while(|b| *b != 0)
            .collect();
        self.key_bytes(&bytes);
    }

    /// Moves the mouse by `dx` (right) and `dy` (down) with `buttons` (a mask of `BUTTON_*`)
    /// held.
    pub fn mouse_motion(&self, dx: i32, dy: i32, buttons: u32) {
        self.buttons.store(buttons, Ordering::Relaxed);
        lock(&self.i8042).mouse_report(dx, dy, 0, ps2_buttons(buttons));
    }

    /// Presses (`down`) or releases `button`; `buttons` is the mask held afterwards. A wheel
    /// press scrolls one notch, a wheel release does nothing.
    pub fn mouse_button(&self, button: MouseButton, down: bool, buttons: u32) {
        let dz = match (button, down) {
            (MouseButton::WheelUp, true) => -1,
            (MouseButton::WheelDown, true) => 1,
            _ => 0,
        };
        self.buttons.store(buttons, Ordering::Relaxed);
        lock(&self.i8042).mouse_report(0, 0, dz, ps2_buttons(buttons));
    }

    /// The button mask last reported, for callers that send single button changes.
    pub fn buttons(&self) -> u32 {
        self.buttons.load(Ordering::Relaxed)
    }

    /// The keyboard LEDs the guest last set (`LED_*` bits), as SPICE reports lock state.
    ///
    /// TODO: nothing signals a change; a SPICE server that pushes `KEY_MODIFIERS` when the
    /// guest toggles a lock has to compare this after each key it sends, or poll it.
    pub fn leds(&self) -> u8 {
        self.leds.load(Ordering::Relaxed)
    }
}

fn lock(i8042: &Mutex<I8042>) -> MutexGuard<'_, I8042> {
    i8042.lock().unwrap_or_else(|e| e.into_inner())
}

/// The set 1 bytes of a press or release of `code`, if `code` is a key.
fn set1_bytes(code: u32, down: bool) -> Option<Vec<u8>> {
    let release = if down { 0 } else { SET1_BREAK };
    if code == PAUSE_KEY {
        return Some(vec![0xe1, 0x1d | release, 0x45 | release]);
    }

    let [make, prefix, 0, 0] = code.to_le_bytes() else {
        return None;
    };
    if !(0x01..0x80).contains(&make) {
        return None;
    }
    match prefix {
        0 => Some(vec![make | release]),
        PREFIX_E0 => Some(vec![PREFIX_E0, make | release]),
        _ => None,
    }
}

/// The PS/2 button bits of a `BUTTON_*` mask (PS/2 swaps middle and right).
fn ps2_buttons(buttons: u32) -> u8 {
    let mut ps2 = 0;
    if buttons & BUTTON_LEFT != 0 {
        ps2 |= PS2_LEFT;
    }
    if buttons & BUTTON_MIDDLE != 0 {
        ps2 |= PS2_MIDDLE;
    }
    if buttons & BUTTON_RIGHT != 0 {
        ps2 |= PS2_RIGHT;
    }
    ps2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_codes_become_set_1_bytes() {
        assert_eq!(set1_bytes(0x1e, true), Some(vec![0x1e]));
        assert_eq!(set1_bytes(0x1e, false), Some(vec![0x9e]));
        assert_eq!(set1_bytes(0xe048, true), Some(vec![0xe0, 0x48]));
        assert_eq!(set1_bytes(0xe048, false), Some(vec![0xe0, 0xc8]));
        assert_eq!(set1_bytes(PAUSE_KEY, true), Some(vec![0xe1, 0x1d, 0x45]));
        assert_eq!(set1_bytes(PAUSE_KEY, false), Some(vec![0xe1, 0x9d, 0xc5]));
    }

    #[test]
    fn codes_outside_set_1_are_refused() {
        for code in [
            0,
            0x80,
            0x9e,
            0xe000,
            0xe0c8,
            0xe148,
            0x1_001e,
            0xe1_1d46,
            u32::MAX,
        ] {
            assert_eq!(set1_bytes(code, true), None, "{code:#x}");
        }
    }

    #[test]
    fn buttons_map_to_ps2_bits() {
        assert_eq!(ps2_buttons(BUTTON_LEFT), 0x01);
        assert_eq!(ps2_buttons(BUTTON_RIGHT), 0x02);
        assert_eq!(ps2_buttons(BUTTON_MIDDLE), 0x04);
        assert_eq!(ps2_buttons(0xff), 0x07);
    }
}
