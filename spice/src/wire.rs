// SPDX-License-Identifier: Apache-2.0
//! Little-endian encoding and checked decoding, and the data headers that frame every message
//! after the link stage.

use crate::Rect;

/// Size of `SpiceMiniDataHeader`: u16 type, u32 size.
pub const MINI_HEADER_SIZE: usize = 6;
/// Size of `SpiceDataHeader`: u64 serial, u16 type, u32 size, u32 sub_list.
pub const FULL_HEADER_SIZE: usize = 18;

/// Appends little-endian fields to a message body.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Creates a writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian i32.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian i16.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a SPICE `Rect`: top, left, bottom, right. The rect must be clipped to a surface
    /// first, which keeps every edge within i32.
    pub fn rect(&mut self, r: Rect) -> &mut Self {
        let right = r.x.saturating_add_unsigned(r.w);
        let bottom = r.y.saturating_add_unsigned(r.h);
        self.i32(r.y).i32(r.x).i32(bottom).i32(right)
    }

    /// Current length of the body.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Returns the body.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from a client message; every read is bounds-checked.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

/// A client message was shorter than its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl<'a> Reader<'a> {
    /// Starts reading `data` from its first byte.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let (head, rest) = self.data.split_first_chunk::<N>().ok_or(Truncated)?;
        self.data = rest;
        Ok(*head)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.take::<1>()?[0])
    }

    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    /// Reads a little-endian i32.
    pub fn i32(&mut self) -> Result<i32, Truncated> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.take()?))
    }
}

/// Which data header a channel uses, chosen at the end of the link stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// `SpiceMiniDataHeader`, used when the client offered `MINI_HEADER`.
    Mini,
    /// `SpiceDataHeader` with a serial and an (always empty) sub-message list.
    Full,
}

impl HeaderKind {
    /// Size of this header on the wire.
    pub fn size(self) -> usize {
        match self {
            HeaderKind::Mini => MINI_HEADER_SIZE,
            HeaderKind::Full => FULL_HEADER_SIZE,
        }
    }

    /// Encodes the header of a message with `body_len` bytes; `serial` is only written in
    /// full headers.
    pub fn encode(self, serial: u64, msg_type: u16, body_len: u32) -> Vec<u8> {
        let mut w = Writer::with_capacity(FULL_HEADER_SIZE);
        if self == HeaderKind::Full {
            w.u64(serial);
        }
        w.u16(msg_type).u32(body_len);
        if self == HeaderKind::Full {
            w.u32(0);
        }
        w.finish()
    }

    /// Decodes a received header into (type, body size, sub_list).
    pub fn decode(self, header: &[u8]) -> Result<(u16, u32, u32), Truncated> {
        let mut r = Reader::new(header);
        match self {
            HeaderKind::Mini => Ok((r.u16()?, r.u32()?, 0)),
            HeaderKind::Full => {
                r.u64()?;
                Ok((r.u16()?, r.u32()?, r.u32()?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_is_top_left_bottom_right() {
        let mut w = Writer::default();
        w.rect(Rect {
            x: 10,
            y: 20,
            w: 3,
            h: 2,
        });
        let expect = [20, 0, 0, 0, 10, 0, 0, 0, 22, 0, 0, 0, 13, 0, 0, 0];
        assert_eq!(w.finish(), expect);
    }

    #[test]
    fn headers_encode_and_decode() {
        let mini = HeaderKind::Mini.encode(7, 0x0132, 0x0102_0304);
        assert_eq!(mini, [0x32, 0x01, 4, 3, 2, 1]);
        assert_eq!(HeaderKind::Mini.decode(&mini), Ok((0x132, 0x0102_0304, 0)));

        let full = HeaderKind::Full.encode(7, 3, 8);
        assert_eq!(full, [7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(HeaderKind::Full.decode(&full), Ok((3, 8, 0)));
        assert_eq!(HeaderKind::Full.decode(&full[..10]), Err(Truncated));
    }

    #[test]
    fn reader_refuses_to_read_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0201));
        assert_eq!(r.u16(), Err(Truncated));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u8(), Err(Truncated));
    }
}
