// SPDX-License-Identifier: Apache-2.0
//! Legacy PC devices on port I/O: the 16550 UART and the i8042 controller.

mod i8042;
mod serial;

pub use i8042::I8042;
pub use serial::{SerialDevice, SerialInputEvents, SerialOutput, SERIAL_OUTPUT_CAPACITY};
