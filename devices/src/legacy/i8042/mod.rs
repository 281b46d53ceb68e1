// SPDX-License-Identifier: Apache-2.0
//! The i8042 PS/2 controller on ports 0x60 (data) and 0x64 (status and command), with a
//! keyboard on its first port and a mouse on its auxiliary port.
//!
//! As on real hardware, both ports share one output buffer; the status register's bit 5 says
//! which device the byte came from, and the command byte's bits 0 and 1 decide whether a full
//! buffer raises IRQ 1 (keyboard) or IRQ 12 (mouse). The lines are edge-triggered ISA
//! interrupts behind irqfds, so an interrupt is raised each time the buffer goes from empty
//! (or masked) to full. With translation on (command byte bit 6, set at power-on as firmware
//! leaves it and as Linux keeps it) keyboard bytes pass through the set 2 to set 1 table.
//!
//! The VMM's other threads type keys and move the mouse through an [`InputHandle`], which
//! takes the device lock only to queue bytes.
//!
//! Left out on purpose: the controller's internal RAM (0x21-0x3f, 0x61-0x7f), its input port
//! (0xc0), password and keylock commands, and the timing of the serial lines: a byte the guest
//! writes is handled at once, so the input buffer is never seen full.

mod input;
mod keyboard;
mod mouse;
mod queue;
mod scancode;

use std::collections::VecDeque;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

pub use input::{
    InputHandle, InvalidKey, MouseButton, BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT, LED_CAPS_LOCK,
    LED_NUM_LOCK, LED_SCROLL_LOCK, PAUSE_KEY,
};
pub use keyboard::KEYBOARD_QUEUE_SIZE;
pub use mouse::MOUSE_QUEUE_SIZE;

use self::keyboard::Keyboard;
use self::mouse::Mouse;
use self::scancode::Translator;
use crate::bus::BusDevice;
use crate::log_limit::LogLimiter;
use crate::{ExitRequest, Interrupt, VmExitRequester};

/// Port offsets from 0x60.
const DATA_PORT: u64 = 0;
const STATUS_COMMAND_PORT: u64 = 4;

// Status register bits.
/// Output buffer full: a byte waits on port 0x60.
const STATUS_OBF: u8 = 1 << 0;
/// System flag: the self-test passed (copied from the command byte).
const STATUS_SYSTEM: u8 = 1 << 2;
/// The last byte written went to port 0x64 (a command), not 0x60.
const STATUS_COMMAND: u8 = 1 << 3;
/// Keyboard not inhibited by the keylock switch.
const STATUS_UNLOCKED: u8 = 1 << 4;
/// The byte in the output buffer came from the auxiliary device.
const STATUS_AUX_OBF: u8 = 1 << 5;

// Command byte (controller RAM byte 0) bits.
/// IRQ 1 when a keyboard byte is in the output buffer.
const CTR_KBD_INT: u8 = 1 << 0;
/// IRQ 12 when a mouse byte is in the output buffer.
const CTR_AUX_INT: u8 = 1 << 1;
/// The system flag, shown in status bit 2.
const CTR_SYSTEM: u8 = 1 << 2;
/// Keyboard interface disabled (its clock held low).
const CTR_KBD_DISABLE: u8 = 1 << 4;
/// Auxiliary interface disabled.
const CTR_AUX_DISABLE: u8 = 1 << 5;
/// Translate keyboard bytes from set 2 to set 1.
const CTR_TRANSLATE: u8 = 1 << 6;
/// The command byte firmware leaves: keyboard on with its interrupt and translation, the
/// mouse off until a driver wants it.
const CTR_POWER_ON: u8 = CTR_TRANSLATE | CTR_AUX_DISABLE | CTR_SYSTEM | CTR_KBD_INT;

// Output port bits.
/// Low pulses the CPU reset line.
const OUTPORT_RESET: u8 = 1 << 0;
/// The A20 gate (always on here: KVM does not mask A20).
const OUTPORT_A20: u8 = 1 << 1;
/// Mirrors a keyboard byte in the output buffer (the IRQ 1 line).
const OUTPORT_KBD_OBF: u8 = 1 << 4;
/// Mirrors a mouse byte in the output buffer (the IRQ 12 line).
const OUTPORT_AUX_OBF: u8 = 1 << 5;

// Controller commands (port 0x64), as in Linux drivers/input/serio/i8042.h.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
/// 0xf0-0xff pulse output port bits 0-3 low for each clear bit of the command's low nibble;
/// bit 0 is the reset line, so 0xfe resets the machine.
const CMD_PULSE_FIRST: u8 = 0xf0;

const SELF_TEST_PASSED: u8 = 0x55;
const INTERFACE_TEST_PASSED: u8 = 0x00;

/// Controller replies held at once; more means the guest is not reading them.
const MAX_REPLIES: usize = 16;

/// Which device a byte in the output buffer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    /// The keyboard, or the controller itself.
    Keyboard,
    Aux,
}

/// Where the next byte written to port 0x60 goes, after a controller command that takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataFor {
    CommandByte,
    OutputPort,
    KeyboardOutput,
    AuxOutput,
    AuxDevice,
}

/// The i8042 controller with its keyboard and mouse.
pub struct I8042 {
    ctr: u8,
    outport: u8,
    last_write_was_command: bool,
    output: Option<(u8, Port)>,
    /// What port 0x60 returns when nothing new is there: the last byte read.
    last_output: u8,
    replies: VecDeque<(u8, Port)>,
    pending: Option<DataFor>,
    translator: Translator,
    keyboard: Keyboard,
    mouse: Mouse,
    kbd_irq: Arc<dyn Interrupt>,
    aux_irq: Arc<dyn Interrupt>,
    kbd_line: bool,
    aux_line: bool,
    vm: Arc<dyn VmExitRequester>,
    leds: Arc<AtomicU8>,
    limiter: LogLimiter,
}

impl I8042 {
    /// Creates the controller in its power-on state; it raises `kbd_irq` (IRQ 1) and
    /// `aux_irq` (IRQ 12), and asks `vm` to reset the machine on a reset pulse.
    pub fn new(
        vm: Arc<dyn VmExitRequester>,
        kbd_irq: Arc<dyn Interrupt>,
        aux_irq: Arc<dyn Interrupt>,
    ) -> Self {
        let leds = Arc::new(AtomicU8::new(0));
        I8042 {
            ctr: CTR_POWER_ON,
            outport: OUTPORT_RESET | OUTPORT_A20,
            last_write_was_command: false,
            output: None,
            last_output: 0,
            replies: VecDeque::with_capacity(MAX_REPLIES),
            pending: None,
            translator: Translator::default(),
            keyboard: Keyboard::new(leds.clone()),
            mouse: Mouse::new(),
            kbd_irq,
            aux_irq,
            kbd_line: false,
            aux_line: false,
            vm,
            leds,
            limiter: LogLimiter::new("i8042"),
        }
    }

    /// Reads the status register (port 0x64).
    fn read_status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if self.ctr & CTR_SYSTEM != 0 {
            status |= STATUS_SYSTEM;
        }
        match self.output {
            Some((_, Port::Keyboard)) => status |= STATUS_OBF,
            Some((_, Port::Aux)) => status |= STATUS_OBF | STATUS_AUX_OBF,
            None => {}
        }
        if self.last_write_was_command {
            status |= STATUS_COMMAND;
        }
        status
    }

    /// Reads the output buffer (port 0x60), which empties it and lets the next byte in.
    fn read_data(&mut self) -> u8 {
        if let Some((byte, _)) = self.output.take() {
            self.last_output = byte;
        }
        // The lines drop with the buffer; a byte refilled now raises them again.
        self.kbd_line = false;
        self.aux_line = false;
        self.update();
        self.last_output
    }

    /// Handles a byte written to port 0x60: a controller command's data, else a keyboard byte.
    fn write_data(&mut self, byte: u8) {
        self.last_write_was_command = false;
        match self.pending.take() {
            Some(DataFor::CommandByte) => self.set_ctr(byte),
            Some(DataFor::OutputPort) => self.write_outport(byte),
            Some(DataFor::KeyboardOutput) => self.reply(byte, Port::Keyboard),
            Some(DataFor::AuxOutput) => self.reply(byte, Port::Aux),
            Some(DataFor::AuxDevice) => self.mouse.write(byte),
            None => self.keyboard.write(byte),
        }
        self.update();
    }

    /// Handles a controller command written to port 0x64.
    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        self.pending = None;
        match command {
            CMD_READ_CTR => self.reply(self.ctr, Port::Keyboard),
            CMD_WRITE_CTR => self.pending = Some(DataFor::CommandByte),
            CMD_AUX_DISABLE => self.set_ctr(self.ctr | CTR_AUX_DISABLE),
            CMD_AUX_ENABLE => self.set_ctr(self.ctr & !CTR_AUX_DISABLE),
            CMD_AUX_TEST | CMD_KBD_TEST => self.reply(INTERFACE_TEST_PASSED, Port::Keyboard),
            CMD_SELF_TEST => {
                self.ctr |= CTR_SYSTEM;
                self.reply(SELF_TEST_PASSED, Port::Keyboard);
            }
            CMD_KBD_DISABLE => self.set_ctr(self.ctr | CTR_KBD_DISABLE),
            CMD_KBD_ENABLE => self.set_ctr(self.ctr & !CTR_KBD_DISABLE),
            CMD_READ_OUTPORT => self.reply(self.outport_value(), Port::Keyboard),
            CMD_WRITE_OUTPORT => self.pending = Some(DataFor::OutputPort),
            CMD_WRITE_KBD_OUTPUT => self.pending = Some(DataFor::KeyboardOutput),
            CMD_WRITE_AUX_OUTPUT => self.pending = Some(DataFor::AuxOutput),
            CMD_WRITE_AUX => self.pending = Some(DataFor::AuxDevice),
            CMD_PULSE_FIRST.. => {
                if command & OUTPORT_RESET == 0 {
                    self.vm.request_exit(ExitRequest::Reset);
                }
            }
            _ => self.limiter.warn(format_args!(
                "unknown controller command {command:#04x} ignored"
            )),
        }
        self.update();
    }

    fn set_ctr(&mut self, ctr: u8) {
        if ctr & CTR_TRANSLATE == 0 {
            self.translator.reset();
        }
        self.ctr = ctr;
    }

    fn write_outport(&mut self, value: u8) {
        self.outport = value & !(OUTPORT_KBD_OBF | OUTPORT_AUX_OBF);
        if value & OUTPORT_RESET == 0 {
            self.vm.request_exit(ExitRequest::Reset);
        }
    }

    fn outport_value(&self) -> u8 {
        match self.output {
            Some((_, Port::Keyboard)) => self.outport | OUTPORT_KBD_OBF,
            Some((_, Port::Aux)) => self.outport | OUTPORT_AUX_OBF,
            None => self.outport,
        }
    }

    /// Queues a byte the controller itself produced.
    fn reply(&mut self, byte: u8, port: Port) {
        if self.replies.len() >= MAX_REPLIES {
            self.limiter.warn(format_args!(
                "{MAX_REPLIES} replies unread; reply {byte:#04x} dropped"
            ));
            return;
        }
        self.replies.push_back((byte, port));
    }

    /// Fills an empty output buffer (controller replies first, then the keyboard, then the
    /// mouse, each only while its interface is enabled) and raises the lines that rose.
    fn update(&mut self) {
        if self.output.is_none() {
            self.output = self.next_byte();
        }

        let kbd = self.output.is_some_and(|(_, port)| port == Port::Keyboard)
            && self.ctr & CTR_KBD_INT != 0;
        let aux =
            self.output.is_some_and(|(_, port)| port == Port::Aux) && self.ctr & CTR_AUX_INT != 0;
        if kbd && !self.kbd_line {
            self.raise(Port::Keyboard);
        }
        if aux && !self.aux_line {
            self.raise(Port::Aux);
        }
        self.kbd_line = kbd;
        self.aux_line = aux;
    }

    fn next_byte(&mut self) -> Option<(u8, Port)> {
        if let Some(reply) = self.replies.pop_front() {
            return Some(reply);
        }
        if self.ctr & CTR_KBD_DISABLE == 0 {
            while let Some(byte) = self.keyboard.pop() {
                if self.ctr & CTR_TRANSLATE == 0 {
                    return Some((byte, Port::Keyboard));
                }
                if let Some(byte) = self.translator.translate(byte) {
                    return Some((byte, Port::Keyboard));
                }
            }
        }
        if self.ctr & CTR_AUX_DISABLE == 0 {
            return self.mouse.pop().map(|byte| (byte, Port::Aux));
        }
        None
    }

    fn raise(&mut self, port: Port) {
        let irq = match port {
            Port::Keyboard => &self.kbd_irq,
            Port::Aux => &self.aux_irq,
        };
        if let Err(e) = irq.trigger() {
            self.limiter
                .warn(format_args!("cannot raise the {port:?} interrupt: {e}"));
        }
    }

    /// Types set 1 bytes on the keyboard (one key's press or release).
    fn type_set1(&mut self, set1: &[u8]) {
        self.keyboard.type_set1(set1);
        self.update();
    }

    /// Reports mouse motion, wheel and PS/2 buttons.
    fn mouse_report(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        self.mouse.report(dx, dy, dz, buttons);
        self.update();
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_PORT => self.read_data(),
            STATUS_COMMAND_PORT => self.read_status(),
            _ => 0,
        };
        data.fill(value);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let [byte] = data else {
            return;
        };
        match offset {
            DATA_PORT => self.write_data(*byte),
            STATUS_COMMAND_PORT => self.write_command(*byte),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
