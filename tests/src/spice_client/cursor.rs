// SPDX-License-Identifier: Apache-2.0
//! The cursor channel's state: position, visibility and the shape's header (the shape's
//! pixels are counted, not kept).

use super::wire::Bytes;
use super::ClientError;

/// Cursor message numbers (SPICE_MSG_CURSOR_*).
pub mod msg {
    /// Point16 position, u16 trail length, u16 trail frequency, u8 visible, Cursor.
    pub const INIT: u16 = 101;
    /// Forget the cursor until the next INIT.
    pub const RESET: u16 = 102;
    /// Point16 position, u8 visible, Cursor.
    pub const SET: u16 = 103;
    /// Point16 position.
    pub const MOVE: u16 = 104;
    /// Hide the cursor.
    pub const HIDE: u16 = 105;
    /// u16 length, u16 frequency.
    pub const TRAIL: u16 = 106;
    /// u64 id: drop a cached shape (none are kept here).
    pub const INVAL_ONE: u16 = 107;
    /// Drop all cached shapes (none are kept here).
    pub const INVAL_ALL: u16 = 108;
}

/// SPICE_CURSOR_FLAGS_NONE: no shape follows.
const CURSOR_FLAG_NONE: u16 = 1;

/// The header of a cursor shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorShape {
    /// Cache key of the shape.
    pub unique: u64,
    /// SPICE_CURSOR_TYPE_* (0 ALPHA, 1 MONO, ...).
    pub kind: u8,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hot spot column.
    pub hot_x: u16,
    /// Hot spot row.
    pub hot_y: u16,
    /// Bytes of shape data that followed the header.
    pub data_len: usize,
}

/// What the cursor channel has told so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CursorState {
    /// Whether INIT arrived (and no RESET since); SET and MOVE before it are ignored, as
    /// spice-gtk does.
    pub initialized: bool,
    /// Hot spot position in primary-surface pixels.
    pub x: i16,
    /// See `x`.
    pub y: i16,
    /// Whether the cursor is shown.
    pub visible: bool,
    /// The current shape, None for "no cursor".
    pub shape: Option<CursorShape>,
}

impl CursorState {
    /// Applies one server message of the cursor channel.
    pub fn handle(&mut self, kind: u16, body: &[u8]) -> Result<(), ClientError> {
        let mut bytes = Bytes::new(body, "cursor message");
        match kind {
            msg::INIT => {
                self.position(&mut bytes)?;
                let _trail = (bytes.u16()?, bytes.u16()?);
                self.visible = bytes.u8()? != 0;
                self.shape = parse_cursor(&mut bytes)?;
                self.initialized = true;
            }
            msg::RESET => *self = CursorState::default(),
            msg::SET if self.initialized => {
                self.position(&mut bytes)?;
                self.visible = bytes.u8()? != 0;
                self.shape = parse_cursor(&mut bytes)?;
            }
            msg::MOVE if self.initialized => self.position(&mut bytes)?,
            msg::HIDE => self.visible = false,
            msg::SET | msg::MOVE | msg::TRAIL | msg::INVAL_ONE | msg::INVAL_ALL => {}
            other => {
                return Err(ClientError::Unsupported(format!("cursor message {other}")));
            }
        }
        Ok(())
    }

    fn position(&mut self, bytes: &mut Bytes) -> Result<(), ClientError> {
        self.x = bytes.i16()?;
        self.y = bytes.i16()?;
        Ok(())
    }
}

/// Cursor: u16 flags; unless NONE, u64 unique, u8 type, u16 width, height, hot x, hot y;
/// then the shape data up to the end of the message.
fn parse_cursor(bytes: &mut Bytes) -> Result<Option<CursorShape>, ClientError> {
    let flags = bytes.u16()?;
    if flags & CURSOR_FLAG_NONE != 0 {
        return Ok(None);
    }
    let shape = CursorShape {
        unique: bytes.u64()?,
        kind: bytes.u8()?,
        width: bytes.u16()?,
        height: bytes.u16()?,
        hot_x: bytes.u16()?,
        hot_y: bytes.u16()?,
        data_len: bytes.rest().len(),
    };
    Ok(Some(shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_without_shape_then_set_move_hide() {
        let mut cursor = CursorState::default();
        cursor
            .handle(msg::MOVE, &[1, 0, 2, 0])
            .expect("MOVE before INIT is ignored");
        assert_eq!(cursor, CursorState::default());

        cursor
            .handle(msg::INIT, &[5, 0, 6, 0, 0, 0, 0, 0, 1, 1, 0])
            .unwrap();
        assert!(cursor.initialized && cursor.visible);
        assert_eq!((cursor.x, cursor.y, cursor.shape), (5, 6, None));

        // SET of a 2x2 ALPHA cursor: 4 + 1 + 2 + 17 + 16 = 40 bytes.
        let mut set = vec![0xff, 0xff, 3, 0, 1, 0, 0];
        set.extend(9u64.to_le_bytes());
        set.extend([0, 2, 0, 2, 0, 1, 0, 1, 0]);
        set.extend([0xaa; 16]);
        assert_eq!(set.len(), 40);
        cursor.handle(msg::SET, &set).unwrap();
        let shape = cursor.shape.unwrap();
        assert_eq!((cursor.x, cursor.y), (-1, 3));
        assert_eq!(
            (shape.unique, shape.kind, shape.width, shape.height),
            (9, 0, 2, 2)
        );
        assert_eq!((shape.hot_x, shape.hot_y, shape.data_len), (1, 1, 16));

        cursor.handle(msg::HIDE, &[]).unwrap();
        assert!(!cursor.visible);
        cursor.handle(msg::MOVE, &[7, 0, 8, 0]).unwrap();
        assert_eq!((cursor.x, cursor.y, cursor.visible), (7, 8, false));

        cursor.handle(msg::RESET, &[]).unwrap();
        assert_eq!(cursor, CursorState::default());
    }

    #[test]
    fn truncated_cursor_is_an_error() {
        let err = CursorState::default()
            .handle(msg::INIT, &[5, 0, 6, 0, 0, 0, 0, 0, 1, 0, 0, 1])
            .unwrap_err();
        assert!(
            err.to_string().contains("cursor message: needs 8 bytes"),
            "{err}"
        );
    }
}
