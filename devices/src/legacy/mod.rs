// SPDX-License-Identifier: Apache-2.0
//! Legacy PC devices on port I/O: the 16550 UART and the i8042 PS/2 controller with its
//! keyboard and mouse.

mod i8042;
mod serial;

pub use i8042::{
    InputHandle, InvalidKey, MouseButton, BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT, I8042,
    KEYBOARD_QUEUE_SIZE, LED_CAPS_LOCK, LED_NUM_LOCK, LED_SCROLL_LOCK, MOUSE_QUEUE_SIZE, PAUSE_KEY,
};
pub use serial::{SerialDevice, SerialInputEvents, SerialOutput, SERIAL_OUTPUT_CAPACITY};
