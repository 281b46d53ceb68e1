// SPDX-License-Identifier: Apache-2.0
//! The main channel (reference section 6): session id, mouse mode and the channel list.

use std::time::Instant;

use crate::display_msg::OutMsg;
use crate::proto::*;
use crate::wire::Writer;

/// Channels this server offers, as (type, id).
pub const CHANNELS: [(u8, u8); 3] = [
    (CHANNEL_DISPLAY, 0),
    (CHANNEL_INPUTS, 0),
    (CHANNEL_CURSOR, 0),
];
/// Agent tokens announced (spice-server's default; there is no agent).
const AGENT_TOKENS: u32 = 10;
/// RAM hint: spice-gtk sizes its image caches from it; 64 MiB is QXL's usual RAM BAR.
const RAM_HINT: u32 = 64 << 20;

/// MAIN_INIT: session id, one display, server mouse mode only, no agent. `mm_time` is the
/// multimedia clock in milliseconds.
pub fn init(session_id: u32, mm_time: u32) -> OutMsg {
    let mut w = Writer::with_capacity(32);
    w.u32(session_id).u32(1);
    w.u32(MOUSE_MODE_SERVER).u32(MOUSE_MODE_SERVER);
    w.u32(0).u32(AGENT_TOKENS).u32(mm_time).u32(RAM_HINT);
    OutMsg::new(MSG_MAIN_INIT, w.finish())
}

/// CHANNELS_LIST of [`CHANNELS`].
pub fn channels_list() -> OutMsg {
    let mut w = Writer::with_capacity(4 + 2 * CHANNELS.len());
    w.u32(u32::try_from(CHANNELS.len()).unwrap_or(0));
    for (channel_type, id) in CHANNELS {
        w.u8(channel_type).u8(id);
    }
    OutMsg::new(MSG_MAIN_CHANNELS_LIST, w.finish())
}

/// Milliseconds since `start`, wrapping like the 32-bit multimedia clock does.
pub fn mm_time(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_millis() & u128::from(u32::MAX)).unwrap_or(0)
}

/// What the main channel does with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum MainAction {
    /// Nothing (agent traffic, mouse mode requests we cannot grant, client info).
    Ignore,
    /// Answer with this message.
    Reply(OutMsg),
}

/// Handles one main-channel client message.
pub fn handle(msg_type: u16, _body: &[u8]) -> Result<MainAction, String> {
    match msg_type {
        MSGC_MAIN_ATTACH_CHANNELS => Ok(MainAction::Reply(channels_list())),
        // Only server mode exists here, and spice-server stays silent when the mode is
        // unchanged. Agent messages go nowhere: there is no agent.
        MSGC_MAIN_MOUSE_MODE_REQUEST => Ok(MainAction::Ignore),
        MSGC_MAIN_FIRST..=MSGC_MAIN_LAST => Ok(MainAction::Ignore),
        _ => Err(format!("unknown main channel message type {msg_type}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_layout() {
        let msg = init(0x1122_3344, 0x5566_7788);
        assert_eq!(msg.msg_type, 103);
        let expect = [
            0x44, 0x33, 0x22, 0x11, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0,
            0x88, 0x77, 0x66, 0x55, 0, 0, 0, 4,
        ];
        assert_eq!(msg.body, expect);
    }

    #[test]
    fn attach_channels_gets_the_list() {
        let reply = handle(MSGC_MAIN_ATTACH_CHANNELS, &[]).unwrap();
        let list = OutMsg::new(104, vec![3, 0, 0, 0, 2, 0, 3, 0, 4, 0]);
        assert_eq!(reply, MainAction::Reply(list));
        assert_eq!(handle(107, &[1, 2, 3]), Ok(MainAction::Ignore));
        assert!(handle(200, &[]).is_err());
        assert!(handle(100, &[]).is_err());
    }
}
