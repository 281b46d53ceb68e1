// SPDX-License-Identifier: Apache-2.0
//! The inputs channel (reference section 8): keyboard and mouse events for the guest.

use crate::display_msg::OutMsg;
use crate::proto::*;
use crate::wire::{Reader, Truncated};

/// Where keyboard and mouse events go (the VMM's i8042 model).
///
/// Calls come from the inputs channel's thread, one at a time.
pub trait InputSink: Send {
    /// A key went down. `scancode` is PC AT scan code set 1 as sent on the wire: the bytes
    /// least significant first, ending at the first zero byte (0x1e = A, 0x4de0 = E0 4D =
    /// Right arrow, 0x21d then 0x45 for Pause).
    fn key_down(&mut self, scancode: u32);
    /// A key went up; `scancode` as for `key_down` (the client sets the break bit itself,
    /// e.g. 0x9e, 0xcde0).
    fn key_up(&mut self, scancode: u32);
    /// Relative motion (server mouse mode). `buttons` is the SPICE button mask: 1 left,
    /// 2 middle, 4 right, 8 wheel up, 16 wheel down, 32 side, 64 extra.
    fn mouse_motion(&mut self, dx: i32, dy: i32, buttons: u32);
    /// SPICE button `button` (1 left, 2 middle, 3 right, 4 wheel up, 5 wheel down, 6 side,
    /// 7 extra) was pressed or released; `buttons` is the mask afterwards.
    fn mouse_button(&mut self, button: u32, pressed: bool, buttons: u32);
    /// Lock keys the client wants on: 1 scroll lock, 2 num lock, 4 caps lock.
    fn modifiers(&mut self, leds: u32) {
        let _ = leds;
    }
}

/// INPUTS_INIT with the keyboard lock state.
pub fn init(modifiers: u16) -> OutMsg {
    OutMsg::new(MSG_INPUTS_INIT, modifiers.to_le_bytes().to_vec())
}

/// MOUSE_MOTION_ACK.
pub fn motion_ack() -> OutMsg {
    OutMsg::new(MSG_INPUTS_MOUSE_MOTION_ACK, Vec::new())
}

/// Per-connection inputs state: counts motion messages for the acks.
#[derive(Debug, Default)]
pub struct InputsChannel {
    motions: u32,
}

impl InputsChannel {
    /// Handles one client message; returns a motion ack to send every
    /// [`MOTION_ACK_BUNCH`] motion or position messages.
    pub fn handle(
        &mut self,
        sink: &mut dyn InputSink,
        msg_type: u16,
        body: &[u8],
    ) -> Result<Option<OutMsg>, String> {
        let truncated = |_: Truncated| format!("inputs message type {msg_type} truncated");
        let mut r = Reader::new(body);
        match msg_type {
            MSGC_INPUTS_KEY_DOWN => sink.key_down(r.u32().map_err(truncated)?),
            MSGC_INPUTS_KEY_UP => sink.key_up(r.u32().map_err(truncated)?),
            MSGC_INPUTS_KEY_MODIFIERS => sink.modifiers(u32::from(r.u16().map_err(truncated)?)),
            // Only sent when the server offers KEY_SCANCODE, which we do not.
            MSGC_INPUTS_KEY_SCANCODE => {}
            MSGC_INPUTS_MOUSE_MOTION => {
                let (dx, dy) = (r.i32().map_err(truncated)?, r.i32().map_err(truncated)?);
                let buttons = r.u16().map_err(truncated)?;
                sink.mouse_motion(dx, dy, u32::from(buttons));
                return Ok(self.count_motion());
            }
            // Client mouse mode is never offered; count it for the acks all the same.
            MSGC_INPUTS_MOUSE_POSITION => {
                r.u32()
                    .and(r.u32())
                    .and(r.u16())
                    .and(r.u8())
                    .map_err(truncated)?;
                return Ok(self.count_motion());
            }
            MSGC_INPUTS_MOUSE_PRESS | MSGC_INPUTS_MOUSE_RELEASE => {
                let button = r.u8().map_err(truncated)?;
                let buttons = r.u16().map_err(truncated)?;
                let pressed = msg_type == MSGC_INPUTS_MOUSE_PRESS;
                sink.mouse_button(u32::from(button), pressed, u32::from(buttons));
            }
            _ => return Err(format!("unknown inputs message type {msg_type}")),
        }
        Ok(None)
    }

    fn count_motion(&mut self) -> Option<OutMsg> {
        self.motions += 1;
        if self.motions < MOTION_ACK_BUNCH {
            return None;
        }
        self.motions = 0;
        Some(motion_ack())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Record(Vec<String>);

    impl InputSink for Record {
        fn key_down(&mut self, scancode: u32) {
            self.0.push(format!("down {scancode:#x}"));
        }
        fn key_up(&mut self, scancode: u32) {
            self.0.push(format!("up {scancode:#x}"));
        }
        fn mouse_motion(&mut self, dx: i32, dy: i32, buttons: u32) {
            self.0.push(format!("motion {dx} {dy} {buttons}"));
        }
        fn mouse_button(&mut self, button: u32, pressed: bool, buttons: u32) {
            self.0.push(format!("button {button} {pressed} {buttons}"));
        }
        fn modifiers(&mut self, leds: u32) {
            self.0.push(format!("leds {leds}"));
        }
    }

    #[test]
    fn events_reach_the_sink() {
        let mut sink = Record::default();
        let mut ch = InputsChannel::default();
        ch.handle(&mut sink, 101, &[0xe0, 0x4d, 0, 0]).unwrap();
        ch.handle(&mut sink, 102, &[0xe0, 0xcd, 0, 0]).unwrap();
        ch.handle(&mut sink, 103, &[4, 0]).unwrap();
        ch.handle(&mut sink, 111, &[5, 0, 0, 0, 0xfd, 0xff, 0xff, 0xff, 1, 0])
            .unwrap();
        ch.handle(&mut sink, 113, &[3, 4, 0]).unwrap();
        ch.handle(&mut sink, 114, &[3, 0, 0]).unwrap();
        let expect = [
            "down 0x4de0",
            "up 0xcde0",
            "leds 4",
            "motion 5 -3 1",
            "button 3 true 4",
            "button 3 false 0",
        ];
        assert_eq!(sink.0, expect);
    }

    #[test]
    fn one_ack_per_four_motions() {
        let mut sink = Record::default();
        let mut ch = InputsChannel::default();
        let motion = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        let position = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let mut acks = 0;
        for i in 0..400 {
            let reply = match i % 2 {
                0 => ch.handle(&mut sink, 111, &motion),
                _ => ch.handle(&mut sink, 112, &position),
            };
            if let Some(msg) = reply.unwrap() {
                assert_eq!(msg, OutMsg::new(111, vec![]));
                acks += 1;
            }
        }
        assert_eq!(acks, 100);
    }

    #[test]
    fn truncated_and_unknown_messages_are_errors() {
        let mut sink = Record::default();
        let mut ch = InputsChannel::default();
        assert!(ch.handle(&mut sink, 101, &[1, 2]).is_err());
        assert!(ch.handle(&mut sink, 111, &[0; 9]).is_err());
        assert!(ch.handle(&mut sink, 112, &[0; 10]).is_err());
        assert!(ch.handle(&mut sink, 99, &[]).is_err());
        assert!(sink.0.is_empty());
        assert_eq!(init(2).body, [2, 0]);
    }
}
