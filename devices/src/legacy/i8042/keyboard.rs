// SPDX-License-Identifier: Apache-2.0
//! The PS/2 keyboard behind the i8042's first port: an MF2 keyboard that answers the commands
//! Linux's atkbd sends and types keys given as set 1 scan codes.
//!
//! Left out on purpose: scan code set 3 (refused with a resend reply; Linux asks for it only
//! when told to), the set 3 per-key commands 0xf7-0xfd (acknowledged and ignored) and typematic
//! repeat (the rate is stored; the sender of the input repeats keys itself, as SPICE clients do).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::queue::ByteQueue;
use super::scancode::set1_to_set2;
use crate::log_limit::LogLimiter;

/// Bytes the keyboard holds for the controller; a full queue drops new keys.
pub const KEYBOARD_QUEUE_SIZE: usize = 256;

/// Acknowledges a command or parameter.
pub const ACK: u8 = 0xfa;
/// Asks the host to send the last byte again (an unknown command or a bad parameter).
pub const RESEND: u8 = 0xfe;
/// Basic assurance test passed, sent after a reset.
pub const SELF_TEST_PASSED: u8 = 0xaa;
/// The ID of an MF2 keyboard (before the controller translates its second byte to 0x41).
pub const KEYBOARD_ID: [u8; 2] = [0xab, 0x83];

// Commands (IBM PS/2 Technical Reference, keyboard section; Linux include/linux/libps2.h and
// drivers/input/keyboard/atkbd.c use the same numbers).
const CMD_SET_LEDS: u8 = 0xed;
const CMD_ECHO: u8 = 0xee;
const CMD_SCANCODE_SET: u8 = 0xf0;
const CMD_GET_ID: u8 = 0xf2;
const CMD_SET_TYPEMATIC: u8 = 0xf3;
const CMD_ENABLE: u8 = 0xf4;
const CMD_DISABLE: u8 = 0xf5;
const CMD_SET_DEFAULTS: u8 = 0xf6;
/// 0xf7-0xfd: set 3 key types (all typematic, make/break, ...).
const CMD_SET3_FIRST: u8 = 0xf7;
const CMD_SET3_LAST: u8 = 0xfd;
const CMD_RESEND: u8 = 0xfe;
const CMD_RESET: u8 = 0xff;

/// Typematic byte after a reset: 10.9 characters a second after 500 ms.
const DEFAULT_TYPEMATIC: u8 = 0x2b;

/// The scan code set the keyboard sends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ScancodeSet {
    /// XT codes, which the input arrives in.
    Set1 = 1,
    /// AT codes, the default after a reset.
    Set2 = 2,
}

/// A command waiting for its parameter byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Leds,
    ScancodeSet,
    Typematic,
}

/// The keyboard's state.
#[derive(Debug)]
pub struct Keyboard {
    queue: ByteQueue,
    pending: Option<Pending>,
    set: ScancodeSet,
    scanning: bool,
    typematic: u8,
    /// Lock LEDs (bit 0 Scroll, 1 Num, 2 Caps), shared with the input handle.
    leds: Arc<AtomicU8>,
    /// The last byte the controller took, for the resend command.
    last_sent: u8,
    scratch: Vec<u8>,
    limiter: LogLimiter,
}

impl Keyboard {
    /// Creates a keyboard in its power-on state, with `leds` as its LED register.
    pub fn new(leds: Arc<AtomicU8>) -> Self {
        leds.store(0, Ordering::Relaxed);
        Keyboard {
            queue: ByteQueue::new(KEYBOARD_QUEUE_SIZE),
            pending: None,
            set: ScancodeSet::Set2,
            scanning: true,
            typematic: DEFAULT_TYPEMATIC,
            leds,
            last_sent: 0,
            scratch: Vec::new(),
            limiter: LogLimiter::new("i8042 keyboard"),
        }
    }

    /// Takes the next byte for the controller.
    pub fn pop(&mut self) -> Option<u8> {
        let byte = self.queue.pop()?;
        self.last_sent = byte;
        Some(byte)
    }

    /// The scan code set in use.
    #[cfg(test)]
    pub fn scancode_set(&self) -> ScancodeSet {
        self.set
    }

    /// The typematic rate and delay byte last set.
    #[cfg(test)]
    pub fn typematic(&self) -> u8 {
        self.typematic
    }

    /// Handles a byte the host sent to the keyboard.
    pub fn write(&mut self, byte: u8) {
        match self.pending.take() {
            Some(pending) => self.parameter(pending, byte),
            None => self.command(byte),
        }
    }

    fn command(&mut self, command: u8) {
        match command {
            CMD_SET_LEDS => self.expect(Pending::Leds),
            CMD_SCANCODE_SET => self.expect(Pending::ScancodeSet),
            CMD_SET_TYPEMATIC => self.expect(Pending::Typematic),
            CMD_ECHO => self.reply(&[CMD_ECHO]),
            CMD_GET_ID => self.reply(&[ACK, KEYBOARD_ID[0], KEYBOARD_ID[1]]),
            CMD_ENABLE => {
                self.scanning = true;
                self.reply(&[ACK]);
            }
            CMD_DISABLE | CMD_SET_DEFAULTS => {
                self.set_defaults();
                self.scanning = command == CMD_SET_DEFAULTS;
                self.reply(&[ACK]);
            }
            CMD_SET3_FIRST..=CMD_SET3_LAST => self.reply(&[ACK]),
            CMD_RESEND => self.reply(&[self.last_sent]),
            CMD_RESET => {
                self.set_defaults();
                self.scanning = true;
                self.reply(&[ACK, SELF_TEST_PASSED]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn expect(&mut self, pending: Pending) {
        self.pending = Some(pending);
        self.reply(&[ACK]);
    }

    fn parameter(&mut self, pending: Pending, value: u8) {
        match (pending, value) {
            (Pending::Leds, _) => {
                self.leds.store(value & 0x07, Ordering::Relaxed);
                self.reply(&[ACK]);
            }
            (Pending::ScancodeSet, 0) => self.reply(&[ACK, self.set as u8]),
            (Pending::ScancodeSet, 1) => self.select(ScancodeSet::Set1),
            (Pending::ScancodeSet, 2) => self.select(ScancodeSet::Set2),
            // TODO: set 3 is not emulated; a real keyboard would switch to it.
            (Pending::ScancodeSet, _) => self.reply(&[RESEND]),
            (Pending::Typematic, _) => {
                self.typematic = value & 0x7f;
                self.reply(&[ACK]);
            }
        }
    }

    fn select(&mut self, set: ScancodeSet) {
        self.set = set;
        self.reply(&[ACK]);
    }

    /// Back to the power-on settings; pending output is dropped, as a keyboard clears its
    /// buffer on these commands.
    fn set_defaults(&mut self) {
        self.queue.clear();
        self.set = ScancodeSet::Set2;
        self.typematic = DEFAULT_TYPEMATIC;
        self.leds.store(0, Ordering::Relaxed);
    }

    fn reply(&mut self, bytes: &[u8]) {
        if !self.queue.push_all(bytes) {
            self.limiter.warn(format_args!(
                "output queue full; reply {bytes:02x?} dropped (the guest does not read port 0x60)"
            ));
        }
    }

    /// Types the set 1 bytes `set1` (one key press or release, prefixes included) in the
    /// current scan code set. Ignored while scanning is disabled, as a keyboard does.
    pub fn type_set1(&mut self, set1: &[u8]) {
        if !self.scanning {
            return;
        }

        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        match self.set {
            ScancodeSet::Set1 => bytes.extend_from_slice(set1),
            ScancodeSet::Set2 => set1_to_set2(set1, &mut bytes),
        }
        if !self.queue.push_all(&bytes) {
            self.limiter.warn(format_args!(
                "input queue full ({KEYBOARD_QUEUE_SIZE} bytes); key {set1:02x?} dropped"
            ));
        }
        self.scratch = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyboard() -> (Keyboard, Arc<AtomicU8>) {
        let leds = Arc::new(AtomicU8::new(0));
        (Keyboard::new(leds.clone()), leds)
    }

    fn drain(keyboard: &mut Keyboard) -> Vec<u8> {
        std::iter::from_fn(|| keyboard.pop()).collect()
    }

    fn send(keyboard: &mut Keyboard, bytes: &[u8]) -> Vec<u8> {
        for byte in bytes {
            keyboard.write(*byte);
        }
        drain(keyboard)
    }

    #[test]
    fn reset_id_and_echo() {
        let (mut kbd, _) = keyboard();
        assert_eq!(send(&mut kbd, &[0xff]), [0xfa, 0xaa]);
        assert_eq!(send(&mut kbd, &[0xf2]), [0xfa, 0xab, 0x83]);
        assert_eq!(send(&mut kbd, &[0xee]), [0xee]);
    }

    #[test]
    fn leds_are_remembered_until_reset() {
        let (mut kbd, leds) = keyboard();
        assert_eq!(send(&mut kbd, &[0xed]), [0xfa]);
        assert_eq!(send(&mut kbd, &[0x06]), [0xfa]);
        assert_eq!(leds.load(Ordering::Relaxed), 0x06);

        assert_eq!(send(&mut kbd, &[0xff]), [0xfa, 0xaa]);
        assert_eq!(leds.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn scancode_set_get_and_set() {
        let (mut kbd, _) = keyboard();
        assert_eq!(send(&mut kbd, &[0xf0, 0x00]), [0xfa, 0xfa, 0x02]);
        assert_eq!(send(&mut kbd, &[0xf0, 0x01]), [0xfa, 0xfa]);
        assert_eq!(kbd.scancode_set(), ScancodeSet::Set1);
        assert_eq!(send(&mut kbd, &[0xf0, 0x00]), [0xfa, 0xfa, 0x01]);
        // Set 3 is refused and the set stays.
        assert_eq!(send(&mut kbd, &[0xf0, 0x03]), [0xfa, 0xfe]);
        assert_eq!(kbd.scancode_set(), ScancodeSet::Set1);
        assert_eq!(send(&mut kbd, &[0xf6]), [0xfa]);
        assert_eq!(kbd.scancode_set(), ScancodeSet::Set2);
    }

    #[test]
    fn typematic_enable_disable_and_resend() {
        let (mut kbd, _) = keyboard();
        assert_eq!(send(&mut kbd, &[0xf3, 0x20]), [0xfa, 0xfa]);
        assert_eq!(kbd.typematic(), 0x20);

        assert_eq!(send(&mut kbd, &[0xf5]), [0xfa]);
        assert_eq!(kbd.typematic(), DEFAULT_TYPEMATIC);
        kbd.type_set1(&[0x1e]);
        assert_eq!(drain(&mut kbd), [], "no keys while disabled");

        assert_eq!(send(&mut kbd, &[0xf4]), [0xfa]);
        kbd.type_set1(&[0x1e]);
        assert_eq!(drain(&mut kbd), [0x1c]);
        assert_eq!(send(&mut kbd, &[0xfe]), [0x1c]);
        assert_eq!(send(&mut kbd, &[0xfb]), [0xfa]);
        assert_eq!(send(&mut kbd, &[0x42]), [0xfe]);
    }

    #[test]
    fn keys_in_set_1_pass_unchanged() {
        let (mut kbd, _) = keyboard();
        send(&mut kbd, &[0xf0, 0x01]);
        kbd.type_set1(&[0xe0, 0x48]);
        kbd.type_set1(&[0xe0, 0xc8]);
        assert_eq!(drain(&mut kbd), [0xe0, 0x48, 0xe0, 0xc8]);
    }

    #[test]
    fn a_full_queue_drops_whole_keys() {
        let (mut kbd, _) = keyboard();
        // Each release is three set 2 bytes: 85 fit in 256, the 86th does not.
        for _ in 0..86 {
            kbd.type_set1(&[0xe0, 0xc8]);
        }
        let bytes = drain(&mut kbd);
        assert_eq!(bytes.len(), 255);
        assert_eq!(&bytes[252..], [0xe0, 0xf0, 0x75]);
    }
}
