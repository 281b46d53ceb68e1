// SPDX-License-Identifier: Apache-2.0
//! The PS/2 mouse behind the i8042's auxiliary port: the command set Linux's psmouse uses,
//! with the IntelliMouse wheel extension.
//!
//! A standard packet is three bytes: buttons with the sign bits of X and Y, then the low 8 bits
//! of each 9-bit two's complement delta; Y grows upwards. After the IntelliMouse knock (sample
//! rates 200, 100, 80 in a row) the ID is 3 and a fourth byte carries the wheel. Motion too
//! large for one packet is split over several, so the overflow bits are never needed.
//!
//! Left out on purpose: the IntelliMouse Explorer (ID 4, side buttons), which Linux probes for
//! and then does without, and sample-rate pacing: packets leave as soon as input arrives.

use super::queue::ByteQueue;
use crate::log_limit::LogLimiter;

/// Bytes the mouse holds for the controller: 1024 wheel packets.
pub const MOUSE_QUEUE_SIZE: usize = 4096;

/// Acknowledges a command or parameter.
const ACK: u8 = 0xfa;
/// Asks the host to send the last byte again.
const RESEND: u8 = 0xfe;
const SELF_TEST_PASSED: u8 = 0xaa;
/// ID of a standard PS/2 mouse.
const ID_STANDARD: u8 = 0x00;
/// ID of an IntelliMouse (wheel, four-byte packets).
const ID_INTELLIMOUSE: u8 = 0x03;
/// Sample rates that switch a standard mouse to the IntelliMouse protocol.
const INTELLIMOUSE_KNOCK: [u8; 3] = [200, 100, 80];

// Commands (IBM PS/2 Technical Reference, pointing device section; the same numbers are in
// Linux drivers/input/mouse/psmouse.h).
const CMD_SET_SCALING_1_1: u8 = 0xe6;
const CMD_SET_SCALING_2_1: u8 = 0xe7;
const CMD_SET_RESOLUTION: u8 = 0xe8;
const CMD_STATUS_REQUEST: u8 = 0xe9;
const CMD_SET_STREAM_MODE: u8 = 0xea;
const CMD_READ_DATA: u8 = 0xeb;
const CMD_RESET_WRAP_MODE: u8 = 0xec;
const CMD_SET_WRAP_MODE: u8 = 0xee;
const CMD_SET_REMOTE_MODE: u8 = 0xf0;
const CMD_GET_ID: u8 = 0xf2;
const CMD_SET_SAMPLE_RATE: u8 = 0xf3;
const CMD_ENABLE_REPORTING: u8 = 0xf4;
const CMD_DISABLE_REPORTING: u8 = 0xf5;
const CMD_SET_DEFAULTS: u8 = 0xf6;
const CMD_RESEND: u8 = 0xfe;
const CMD_RESET: u8 = 0xff;

/// Defaults: 100 samples a second, 4 counts per mm.
const DEFAULT_SAMPLE_RATE: u8 = 100;
const DEFAULT_RESOLUTION: u8 = 2;

// Status byte bits (status request reply).
const STATUS_REMOTE: u8 = 1 << 6;
const STATUS_ENABLED: u8 = 1 << 5;
const STATUS_SCALING_2_1: u8 = 1 << 4;

// First packet byte.
const PACKET_ALWAYS_ONE: u8 = 1 << 3;
const PACKET_X_SIGN: u8 = 1 << 4;
const PACKET_Y_SIGN: u8 = 1 << 5;

/// PS/2 button bits as the first packet byte carries them.
pub const PS2_LEFT: u8 = 1 << 0;
/// Right button.
pub const PS2_RIGHT: u8 = 1 << 1;
/// Middle button.
pub const PS2_MIDDLE: u8 = 1 << 2;

/// The largest delta a packet carries: 9-bit two's complement goes to -256..=255, kept
/// symmetric.
const MAX_DELTA: i64 = 255;
/// With 2:1 scaling a delta past 5 is doubled, so half of it fits.
const MAX_DELTA_SCALED: i64 = 127;
/// The wheel delta per packet, a signed nibble as the IntelliMouse sends it.
const MAX_WHEEL: i64 = 7;

/// A command waiting for its parameter byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    SampleRate,
    Resolution,
}

/// The mouse's state.
#[derive(Debug)]
pub struct Mouse {
    queue: ByteQueue,
    pending: Option<Pending>,
    id: u8,
    /// The last three sample rates set, oldest first, for the IntelliMouse knock.
    rates: [u8; 3],
    sample_rate: u8,
    resolution: u8,
    scaling_2_1: bool,
    reporting: bool,
    remote: bool,
    wrap: bool,
    /// PS/2 button bits held down.
    buttons: u8,
    /// Motion not yet reported, in remote mode: X, Y (up), wheel.
    unreported: (i64, i64, i64),
    last_sent: u8,
    limiter: LogLimiter,
}

impl Mouse {
    /// Creates a mouse in its power-on state.
    pub fn new() -> Self {
        Mouse {
            queue: ByteQueue::new(MOUSE_QUEUE_SIZE),
            pending: None,
            id: ID_STANDARD,
            rates: [0; 3],
            sample_rate: DEFAULT_SAMPLE_RATE,
            resolution: DEFAULT_RESOLUTION,
            scaling_2_1: false,
            reporting: false,
            remote: false,
            wrap: false,
            buttons: 0,
            unreported: (0, 0, 0),
            last_sent: 0,
            limiter: LogLimiter::new("i8042 mouse"),
        }
    }

    /// Takes the next byte for the controller.
    pub fn pop(&mut self) -> Option<u8> {
        let byte = self.queue.pop()?;
        self.last_sent = byte;
        Some(byte)
    }

    /// The device ID: 0, or 3 after the IntelliMouse knock.
    #[cfg(test)]
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Handles a byte the host sent to the mouse (controller command 0xd4).
    pub fn write(&mut self, byte: u8) {
        if let Some(pending) = self.pending.take() {
            self.parameter(pending, byte);
        } else if self.wrap && byte != CMD_RESET && byte != CMD_RESET_WRAP_MODE {
            self.reply(&[byte]);
        } else {
            self.command(byte);
        }
    }

    fn command(&mut self, command: u8) {
        match command {
            CMD_SET_SCALING_1_1 | CMD_SET_SCALING_2_1 => {
                self.scaling_2_1 = command == CMD_SET_SCALING_2_1;
                self.reply(&[ACK]);
            }
            CMD_SET_RESOLUTION => self.expect(Pending::Resolution),
            CMD_SET_SAMPLE_RATE => self.expect(Pending::SampleRate),
            CMD_STATUS_REQUEST => {
                let status = self.status();
                self.reply(&[ACK, status, self.resolution, self.sample_rate]);
            }
            CMD_SET_STREAM_MODE | CMD_SET_REMOTE_MODE => {
                self.remote = command == CMD_SET_REMOTE_MODE;
                self.reply(&[ACK]);
            }
            CMD_READ_DATA => {
                self.reply(&[ACK]);
                let (dx, dy, dz) = std::mem::take(&mut self.unreported);
                self.packets(dx, dy, dz);
            }
            CMD_SET_WRAP_MODE | CMD_RESET_WRAP_MODE => {
                self.wrap = command == CMD_SET_WRAP_MODE;
                self.reply(&[ACK]);
            }
            CMD_GET_ID => self.reply(&[ACK, self.id]),
            CMD_ENABLE_REPORTING | CMD_DISABLE_REPORTING => {
                self.reporting = command == CMD_ENABLE_REPORTING;
                self.reply(&[ACK]);
            }
            CMD_SET_DEFAULTS => {
                self.set_defaults();
                self.reply(&[ACK]);
            }
            CMD_RESEND => self.reply(&[self.last_sent]),
            CMD_RESET => {
                self.set_defaults();
                self.id = ID_STANDARD;
                self.wrap = false;
                self.reply(&[ACK, SELF_TEST_PASSED, ID_STANDARD]);
            }
            _ => self.reply(&[RESEND]),
        }
    }

    fn expect(&mut self, pending: Pending) {
        self.pending = Some(pending);
        self.reply(&[ACK]);
    }

    fn parameter(&mut self, pending: Pending, value: u8) {
        match pending {
            Pending::SampleRate => {
                self.sample_rate = value;
                self.rates = [self.rates[1], self.rates[2], value];
                if self.rates == INTELLIMOUSE_KNOCK {
                    self.id = ID_INTELLIMOUSE;
                }
                self.reply(&[ACK]);
            }
            Pending::Resolution if value <= 3 => {
                self.resolution = value;
                self.reply(&[ACK]);
            }
            Pending::Resolution => self.reply(&[RESEND]),
        }
    }

    /// Back to the power-on settings (the ID stays, as on an IntelliMouse); pending output and
    /// motion are dropped.
    fn set_defaults(&mut self) {
        self.queue.clear();
        self.sample_rate = DEFAULT_SAMPLE_RATE;
        self.resolution = DEFAULT_RESOLUTION;
        self.scaling_2_1 = false;
        self.reporting = false;
        self.remote = false;
        self.unreported = (0, 0, 0);
    }

    fn status(&self) -> u8 {
        let mut status = 0;
        if self.remote {
            status |= STATUS_REMOTE;
        }
        if self.reporting {
            status |= STATUS_ENABLED;
        }
        if self.scaling_2_1 {
            status |= STATUS_SCALING_2_1;
        }
        // The status byte orders the buttons left, middle, right from bit 2 down.
        let left = self.buttons & PS2_LEFT != 0;
        let middle = self.buttons & PS2_MIDDLE != 0;
        let right = self.buttons & PS2_RIGHT != 0;
        status | u8::from(left) << 2 | u8::from(middle) << 1 | u8::from(right)
    }

    fn reply(&mut self, bytes: &[u8]) {
        if !self.queue.push_all(bytes) {
            self.limiter.warn(format_args!(
                "output queue full; reply {bytes:02x?} dropped (the guest does not read it)"
            ));
        }
    }

    /// Reports motion (`dx` right, `dy` down, `dz` wheel notches towards the user) and the
    /// PS/2 buttons now held. Sends packets in stream mode with reporting on, keeps the
    /// motion for a read-data command in remote mode, and drops it otherwise.
    pub fn report(&mut self, dx: i32, dy: i32, dz: i32, buttons: u8) {
        let moved = dx != 0 || dy != 0 || dz != 0;
        let changed = buttons != self.buttons;
        self.buttons = buttons;
        if !moved && !changed {
            return;
        }

        // PS/2's Y grows upwards, the screen's downwards.
        let (dx, dy, dz) = (i64::from(dx), -i64::from(dy), i64::from(dz));
        if self.remote {
            let (x, y, z) = self.unreported;
            self.unreported = (x + dx, y + dy, z + dz);
        } else if self.reporting {
            self.packets(dx, dy, dz);
        }
    }

    /// Queues as many packets as it takes to carry the deltas, at least one.
    fn packets(&mut self, mut dx: i64, mut dy: i64, mut dz: i64) {
        let limit = if self.scaling_2_1 {
            MAX_DELTA_SCALED
        } else {
            MAX_DELTA
        };
        let wheel_limit = if self.id == ID_INTELLIMOUSE {
            MAX_WHEEL
        } else {
            0
        };

        loop {
            let x = dx.clamp(-limit, limit);
            let y = dy.clamp(-limit, limit);
            let z = dz.clamp(-wheel_limit, wheel_limit);
            if !self.push_packet(self.scale(x), self.scale(y), z) {
                self.limiter.warn(format_args!(
                    "input queue full ({MOUSE_QUEUE_SIZE} bytes); motion ({dx}, {dy}, {dz}) \
                     dropped"
                ));
                return;
            }

            (dx, dy, dz) = (dx - x, dy - y, dz - z);
            if dx == 0 && dy == 0 && (dz == 0 || wheel_limit == 0) {
                return;
            }
        }
    }

    /// Applies 2:1 scaling: small deltas follow a fixed curve, larger ones double.
    fn scale(&self, delta: i64) -> i64 {
        if !self.scaling_2_1 {
            return delta;
        }
        let scaled = match delta.abs() {
            0 | 1 => delta.abs(),
            2 => 1,
            3 => 3,
            4 => 6,
            5 => 9,
            magnitude => magnitude * 2,
        };
        scaled * delta.signum()
    }

    /// Queues one packet; `x`, `y` are within -255..=255 and `z` within -7..=7.
    fn push_packet(&mut self, x: i64, y: i64, z: i64) -> bool {
        let mut first = PACKET_ALWAYS_ONE | (self.buttons & (PS2_LEFT | PS2_RIGHT | PS2_MIDDLE));
        if x < 0 {
            first |= PACKET_X_SIGN;
        }
        if y < 0 {
            first |= PACKET_Y_SIGN;
        }
        let packet = [first, low_byte(x), low_byte(y), low_byte(z)];
        let len = if self.id == ID_INTELLIMOUSE { 4 } else { 3 };
        self.queue.push_all(&packet[..len])
    }
}

impl Default for Mouse {
    fn default() -> Self {
        Self::new()
    }
}

/// The low 8 bits of a two's complement value.
fn low_byte(value: i64) -> u8 {
    value.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mouse: &mut Mouse) -> Vec<u8> {
        std::iter::from_fn(|| mouse.pop()).collect()
    }

    fn send(mouse: &mut Mouse, bytes: &[u8]) -> Vec<u8> {
        for byte in bytes {
            mouse.write(*byte);
        }
        drain(mouse)
    }

    fn enabled_mouse() -> Mouse {
        let mut mouse = Mouse::new();
        assert_eq!(send(&mut mouse, &[0xf4]), [0xfa]);
        mouse
    }

    #[test]
    fn reset_id_and_status() {
        let mut mouse = Mouse::new();
        assert_eq!(send(&mut mouse, &[0xff]), [0xfa, 0xaa, 0x00]);
        assert_eq!(send(&mut mouse, &[0xf2]), [0xfa, 0x00]);
        assert_eq!(send(&mut mouse, &[0xe9]), [0xfa, 0x00, 0x02, 100]);

        assert_eq!(send(&mut mouse, &[0xe8, 0x03, 0xe7, 0xf4, 0xf0]), [0xfa; 5]);
        assert_eq!(send(&mut mouse, &[0xe9]), [0xfa, 0x70, 0x03, 100]);
        assert_eq!(send(&mut mouse, &[0xe6, 0xea, 0xf5]), [0xfa; 3]);
        assert_eq!(send(&mut mouse, &[0xe9]), [0xfa, 0x00, 0x03, 100]);
        assert_eq!(
            send(&mut mouse, &[0xf6, 0xe9]),
            [0xfa, 0xfa, 0x00, 0x02, 100]
        );
    }

    #[test]
    fn bad_resolution_and_unknown_commands_ask_for_a_resend() {
        let mut mouse = Mouse::new();
        assert_eq!(send(&mut mouse, &[0xe8, 0x04]), [0xfa, 0xfe]);
        assert_eq!(send(&mut mouse, &[0xe1]), [0xfe]);
        assert_eq!(send(&mut mouse, &[0xf2]), [0xfa, 0x00]);
        assert_eq!(send(&mut mouse, &[0xfe]), [0x00], "the last byte again");
    }

    #[test]
    fn wrap_mode_echoes_until_reset_wrap() {
        let mut mouse = Mouse::new();
        assert_eq!(
            send(&mut mouse, &[0xee, 0x12, 0xf4, 0xec]),
            [0xfa, 0x12, 0xf4, 0xfa]
        );
        assert_eq!(send(&mut mouse, &[0xf2]), [0xfa, 0x00]);
    }

    #[test]
    fn the_intellimouse_knock_switches_to_id_3_and_a_reset_back() {
        let mut mouse = Mouse::new();
        // Another rate in between spoils the knock.
        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 60, 0xf3, 80]);
        assert_eq!(send(&mut mouse, &[0xf2]), [0xfa, 0x00]);

        let knock = send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        assert_eq!(knock, [0xfa; 6]);
        assert_eq!(send(&mut mouse, &[0xf2]), [0xfa, 0x03]);
        assert_eq!(send(&mut mouse, &[0xe9]), [0xfa, 0x00, 0x02, 80]);

        assert_eq!(send(&mut mouse, &[0xff]), [0xfa, 0xaa, 0x00]);
        assert_eq!(mouse.id(), 0);
    }

    #[test]
    fn motion_packets_carry_sign_bits_and_up_is_positive() {
        let mut mouse = enabled_mouse();
        mouse.report(10, 20, 0, 0);
        assert_eq!(drain(&mut mouse), [0x28, 10, 0xec]);
        mouse.report(-1, -255, 0, 0);
        assert_eq!(drain(&mut mouse), [0x18, 0xff, 0xff]);
    }

    #[test]
    fn large_motion_is_split_without_overflow_bits() {
        let mut mouse = enabled_mouse();
        mouse.report(600, -300, 0, 0);
        assert_eq!(
            drain(&mut mouse),
            [0x08, 255, 255, 0x08, 255, 45, 0x08, 90, 0]
        );
        mouse.report(-256, 0, 0, 0);
        assert_eq!(drain(&mut mouse), [0x18, 0x01, 0, 0x18, 0xff, 0]);
    }

    #[test]
    fn buttons_send_a_packet_when_they_change() {
        let mut mouse = enabled_mouse();
        mouse.report(0, 0, 0, PS2_LEFT);
        mouse.report(0, 0, 0, PS2_LEFT);
        mouse.report(0, 0, 0, PS2_LEFT | PS2_RIGHT | PS2_MIDDLE);
        mouse.report(0, 0, 0, 0);
        assert_eq!(drain(&mut mouse), [0x09, 0, 0, 0x0f, 0, 0, 0x08, 0, 0]);
        let status = send(&mut mouse, &[0xe9]);
        assert_eq!(status[1], 0x20);
    }

    #[test]
    fn the_wheel_needs_the_intellimouse_protocol() {
        let mut mouse = enabled_mouse();
        mouse.report(0, 0, 1, 0);
        assert_eq!(drain(&mut mouse), [0x08, 0, 0], "no wheel byte for ID 0");

        send(&mut mouse, &[0xf3, 200, 0xf3, 100, 0xf3, 80]);
        mouse.report(0, 0, -1, 0);
        mouse.report(3, 0, 1, PS2_LEFT);
        mouse.report(0, 0, 9, PS2_LEFT);
        assert_eq!(
            drain(&mut mouse),
            [0x08, 0, 0, 0xff, 0x09, 3, 0, 1, 0x09, 0, 0, 7, 0x09, 0, 0, 2]
        );
    }

    #[test]
    fn scaling_2_1_follows_the_curve() {
        let mut mouse = enabled_mouse();
        send(&mut mouse, &[0xe7]);
        for dx in [1, 2, 3, 4, 5, 6, -6, 200] {
            mouse.report(dx, 0, 0, 0);
        }
        assert_eq!(
            drain(&mut mouse),
            [
                0x08, 1, 0, 0x08, 1, 0, 0x08, 3, 0, 0x08, 6, 0, 0x08, 9, 0, 0x08, 12, 0, 0x18,
                0xf4, 0, 0x08, 254, 0, 0x08, 146, 0
            ]
        );
    }

    #[test]
    fn disabled_reporting_drops_motion_and_remote_mode_keeps_it() {
        let mut mouse = Mouse::new();
        mouse.report(5, 5, 0, 0);
        assert_eq!(drain(&mut mouse), []);

        send(&mut mouse, &[0xf0]);
        mouse.report(300, 0, 0, PS2_RIGHT);
        mouse.report(5, -2, 0, PS2_RIGHT);
        assert_eq!(drain(&mut mouse), []);
        assert_eq!(send(&mut mouse, &[0xeb]), [0xfa, 0x0a, 255, 2, 0x0a, 50, 0]);
        assert_eq!(send(&mut mouse, &[0xeb]), [0xfa, 0x0a, 0, 0]);
    }

    #[test]
    fn a_full_queue_drops_the_rest_of_the_motion() {
        let mut mouse = enabled_mouse();
        mouse.report(i32::MAX, i32::MIN, 0, 0);
        let bytes = drain(&mut mouse);
        assert_eq!(bytes.len(), MOUSE_QUEUE_SIZE / 3 * 3);
        assert_eq!(&bytes[..3], [0x08, 255, 255]);

        mouse.report(1, 0, 0, 0);
        assert_eq!(drain(&mut mouse), [0x08, 1, 0], "the mouse works on");
    }
}
