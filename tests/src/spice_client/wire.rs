// SPDX-License-Identifier: Apache-2.0
//! The SPICE wire format as the client sees it: protocol numbers, a bounds-checked
//! little-endian reader, the link messages and the framing of data messages (mini and full
//! header). Numbers come from spice-protocol's enums.h and protocol.h (see the project's SPICE
//! fact sheet, sections 2 to 5).

use std::io::{ErrorKind, Read};

use super::ClientError;

/// "REDQ", the first four bytes of every link message.
pub const MAGIC: [u8; 4] = *b"REDQ";
/// SPICE_VERSION_MAJOR: the only major version spoken.
pub const VERSION_MAJOR: u32 = 2;
/// SPICE_VERSION_MINOR.
pub const VERSION_MINOR: u32 = 2;
/// Size of SpiceLinkHeader.
pub const LINK_HEADER_SIZE: usize = 16;
/// Size of SpiceLinkMess, the client's link message without caps.
pub const LINK_MESS_SIZE: u32 = 18;
/// Size of SpiceLinkReply without caps.
pub const LINK_REPLY_SIZE: usize = 178;
/// SPICE_TICKET_PUBKEY_BYTES: an RSA-1024 SubjectPublicKeyInfo in DER.
pub const PUB_KEY_SIZE: usize = 162;
/// Largest link reply accepted: spice-server itself refuses link messages over 4096 bytes.
pub const MAX_LINK_REPLY_SIZE: u32 = 4096;
/// SPICE_MAX_PASSWORD_LENGTH.
pub const MAX_PASSWORD_LEN: usize = 60;

/// Channel type numbers (SPICE_CHANNEL_*).
pub mod channel {
    /// The main channel, linked first.
    pub const MAIN: u8 = 1;
    /// A display channel.
    pub const DISPLAY: u8 = 2;
    /// The keyboard and mouse channel.
    pub const INPUTS: u8 = 3;
    /// A cursor channel.
    pub const CURSOR: u8 = 4;
}

/// Common capability bits (SPICE_COMMON_CAP_*).
pub mod common_cap {
    /// The client sends an auth mechanism word before the ticket.
    pub const PROTOCOL_AUTH_SELECTION: u32 = 0;
    /// The RSA ticket mechanism.
    pub const AUTH_SPICE: u32 = 1;
    /// The 6-byte data header.
    pub const MINI_HEADER: u32 = 3;
}

/// Display channel capability bits (SPICE_DISPLAY_CAP_*).
pub mod display_cap {
    /// LZ4-compressed images (image type 109).
    pub const LZ4_COMPRESSION: u32 = 5;
    /// The client may send PREFERRED_COMPRESSION.
    pub const PREF_COMPRESSION: u32 = 6;
}

/// Link result and error codes (SPICE_LINK_ERR_*).
pub mod link_err {
    /// Success.
    pub const OK: u32 = 0;
    /// A wrong password or an undecryptable ticket.
    pub const PERMISSION_DENIED: u32 = 7;
}

/// Auth mechanism words (SPICE_COMMON_CAP_AUTH_*).
pub const AUTH_MECHANISM_SPICE: u32 = 1;

/// Server messages common to all channels (SPICE_MSG_*).
pub mod msg {
    /// u32 generation, u32 window: start acking.
    pub const SET_ACK: u16 = 3;
    /// u32 id, u64 timestamp, data to the end.
    pub const PING: u16 = 4;
    /// Wait for other channels; this client handles each channel in order anyway.
    pub const WAIT_FOR_CHANNELS: u16 = 5;
    /// The server is closing the channel.
    pub const DISCONNECTING: u16 = 6;
    /// A text notice.
    pub const NOTIFY: u16 = 7;
}

/// Client messages common to all channels (SPICE_MSGC_*).
pub mod msgc {
    /// u32 generation, the answer to SET_ACK.
    pub const ACK_SYNC: u16 = 1;
    /// One per ack window of received messages.
    pub const ACK: u16 = 2;
    /// u32 id, u64 timestamp, the answer to PING.
    pub const PONG: u16 = 3;
}

/// Capability n as a word list: bit n % 32 of word n / 32.
pub fn caps(bits: &[u32]) -> Vec<u32> {
    let mut words = Vec::new();
    for &bit in bits {
        let index = usize::try_from(bit / 32).expect("a small capability number");
        if words.len() <= index {
            words.resize(index + 1, 0);
        }
        words[index] |= 1 << (bit % 32);
    }
    words
}

/// Whether capability `bit` is set in `words`.
pub fn has_cap(words: &[u32], bit: u32) -> bool {
    usize::try_from(bit / 32)
        .ok()
        .and_then(|i| words.get(i))
        .is_some_and(|w| w & (1 << (bit % 32)) != 0)
}

/// Reads little-endian values from a message, failing cleanly past its end.
pub struct Bytes<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Bytes<'a> {
    /// Reads `buf` from the start; `what` names it in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Bytes { buf, pos: 0, what }
    }

    /// Reads `buf` from `offset` (a pointer field's value).
    pub fn at(buf: &'a [u8], offset: u32, what: &'static str) -> Result<Self, ClientError> {
        let pos = usize::try_from(offset).unwrap_or(usize::MAX);
        if pos > buf.len() {
            return Err(ClientError::Protocol(format!(
                "{what}: offset {offset} is past the end of a {}-byte message",
                buf.len()
            )));
        }
        Ok(Bytes { buf, pos, what })
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ClientError> {
        if n > self.remaining() {
            return Err(ClientError::Protocol(format!(
                "{}: needs {n} bytes at offset {} of a {}-byte message",
                self.what,
                self.pos,
                self.buf.len()
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let bytes = &self.buf[self.pos..];
        self.pos = self.buf.len();
        bytes
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ClientError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    /// A u8.
    pub fn u8(&mut self) -> Result<u8, ClientError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16, ClientError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian i16.
    pub fn i16(&mut self) -> Result<i16, ClientError> {
        Ok(i16::from_le_bytes(self.array()?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, ClientError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian i32.
    pub fn i32(&mut self) -> Result<i32, ClientError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, ClientError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// What the client asks for when it links a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRequest {
    /// 0 for the main channel, the session id from MAIN_INIT for the others.
    pub connection_id: u32,
    /// SPICE_CHANNEL_* number.
    pub channel_type: u8,
    /// Instance number.
    pub channel_id: u8,
    /// Common capability words.
    pub common_caps: Vec<u32>,
    /// Channel capability words.
    pub channel_caps: Vec<u32>,
}

impl LinkRequest {
    /// SpiceLinkHeader, SpiceLinkMess and the caps, as one write.
    pub fn encode(&self) -> Vec<u8> {
        let num_common = u32::try_from(self.common_caps.len()).expect("a few cap words");
        let num_channel = u32::try_from(self.channel_caps.len()).expect("a few cap words");
        let size = LINK_MESS_SIZE + 4 * (num_common + num_channel);

        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        for word in [VERSION_MAJOR, VERSION_MINOR, size, self.connection_id] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&[self.channel_type, self.channel_id]);
        for word in [num_common, num_channel, LINK_MESS_SIZE] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        for word in self.common_caps.iter().chain(&self.channel_caps) {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }
}

/// Checks a SpiceLinkHeader from the server and returns the size of the reply after it.
pub fn parse_link_header(header: &[u8; LINK_HEADER_SIZE]) -> Result<u32, ClientError> {
    if header[..4] != MAGIC {
        return Err(ClientError::Protocol(format!(
            "link reply: bad magic {:02x?} (want \"REDQ\")",
            &header[..4]
        )));
    }
    let mut bytes = Bytes::new(&header[4..], "link header");
    let major = bytes.u32()?;
    let _minor = bytes.u32()?;
    let size = bytes.u32()?;
    if major != VERSION_MAJOR {
        return Err(ClientError::Protocol(format!(
            "link reply: major version {major}, want {VERSION_MAJOR}"
        )));
    }
    let min = u32::try_from(LINK_REPLY_SIZE).expect("178 fits");
    if !(min..=MAX_LINK_REPLY_SIZE).contains(&size) {
        return Err(ClientError::Protocol(format!(
            "link reply: size {size} is outside {min}..={MAX_LINK_REPLY_SIZE}"
        )));
    }
    Ok(size)
}

/// The server's SpiceLinkReply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkReply {
    /// SPICE_LINK_ERR_* (0 = OK).
    pub error: u32,
    /// RSA public key, DER SubjectPublicKeyInfo.
    pub pub_key: Vec<u8>,
    /// Common capability words.
    pub common_caps: Vec<u32>,
    /// Channel capability words.
    pub channel_caps: Vec<u32>,
}

/// Parses a SpiceLinkReply body (the bytes after the link header).
pub fn parse_link_reply(body: &[u8]) -> Result<LinkReply, ClientError> {
    let mut bytes = Bytes::new(body, "link reply");
    let error = bytes.u32()?;
    let pub_key = bytes.take(PUB_KEY_SIZE)?.to_vec();
    let num_common = bytes.u32()?;
    let num_channel = bytes.u32()?;
    let caps_offset = bytes.u32()?;

    let mut caps = Bytes::at(body, caps_offset, "link reply caps")?;
    let words = u64::from(num_common) + u64::from(num_channel);
    if words * 4 > caps.remaining() as u64 {
        return Err(ClientError::Protocol(format!(
            "link reply: {words} cap words do not fit in {} bytes",
            caps.remaining()
        )));
    }
    let mut read_words = |n: u32| (0..n).map(|_| caps.u32()).collect::<Result<Vec<_>, _>>();
    let common_caps = read_words(num_common)?;
    let channel_caps = read_words(num_channel)?;

    Ok(LinkReply {
        error,
        pub_key,
        common_caps,
        channel_caps,
    })
}

/// Size of SpiceMiniDataHeader: u16 type, u32 size.
pub const MINI_HEADER_SIZE: usize = 6;
/// Size of SpiceDataHeader: u64 serial, u16 type, u32 size, u32 sub_list.
pub const FULL_HEADER_SIZE: usize = 18;

/// One data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Message type number.
    pub kind: u16,
    /// The body after the header.
    pub body: Vec<u8>,
}

/// Reads one data message, refusing a body larger than `max_size` before allocating it.
/// Returns `ClientError::Closed` when the stream ends cleanly between messages.
pub fn read_message(r: &mut impl Read, mini: bool, max_size: u32) -> Result<Message, ClientError> {
    let mut header = [0u8; FULL_HEADER_SIZE];
    let header = &mut header[..if mini {
        MINI_HEADER_SIZE
    } else {
        FULL_HEADER_SIZE
    }];
    read_header(r, header)?;

    let mut bytes = Bytes::new(header, "data header");
    if !mini {
        let _serial = bytes.u64()?;
    }
    let kind = bytes.u16()?;
    let size = bytes.u32()?;
    let sub_list = if mini { 0 } else { bytes.u32()? };
    if size > max_size {
        return Err(ClientError::Protocol(format!(
            "message type {kind} claims {size} bytes, over the {max_size}-byte limit"
        )));
    }
    if sub_list != 0 {
        return Err(ClientError::Unsupported(format!(
            "message type {kind} carries a sub-message list"
        )));
    }

    let mut body = vec![0; usize::try_from(size).expect("bounded by max_size")];
    r.read_exact(&mut body)
        .map_err(|e| io_error("read a message body", e))?;
    Ok(Message { kind, body })
}

/// Reads a data header, telling a clean end of stream from a cut one.
fn read_header(r: &mut impl Read, header: &mut [u8]) -> Result<(), ClientError> {
    let mut done = 0;
    while done < header.len() {
        match r.read(&mut header[done..]) {
            Ok(0) if done == 0 => return Err(ClientError::Closed),
            Ok(0) => {
                return Err(io_error(
                    "read a message header",
                    ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("read a message header", e)),
        }
    }
    Ok(())
}

/// Maps an I/O error to a timeout or an I/O failure at `step`.
pub fn io_error(step: &'static str, e: std::io::Error) -> ClientError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout(step.to_string()),
        _ => ClientError::Io { step, source: e },
    }
}

/// Frames a client message with a mini header or with a full header numbered `serial`.
pub fn encode_message(kind: u16, body: &[u8], mini: bool, serial: u64) -> Vec<u8> {
    let size = u32::try_from(body.len()).expect("client messages are small");
    let mut out = Vec::with_capacity(FULL_HEADER_SIZE + body.len());
    if !mini {
        out.extend_from_slice(&serial.to_le_bytes());
    }
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    if !mini {
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_link_request_matches_the_documented_bytes() {
        let request = LinkRequest {
            connection_id: 0,
            channel_type: channel::MAIN,
            channel_id: 0,
            common_caps: vec![0x0d],
            channel_caps: vec![0x0f],
        };
        let want: Vec<u8> = [
            &b"REDQ"[..],
            &[2, 0, 0, 0, 2, 0, 0, 0, 0x1a, 0, 0, 0],
            &[0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x12, 0, 0, 0],
            &[0x0d, 0, 0, 0, 0x0f, 0, 0, 0],
        ]
        .concat();

        assert_eq!(request.encode(), want);
    }

    #[test]
    fn caps_set_bit_n_of_word_n_div_32() {
        assert_eq!(caps(&[0, 1, 3]), vec![0x0b]);
        assert_eq!(caps(&[5, 33]), vec![0x20, 0x02]);
        assert!(has_cap(&[0x0b], common_cap::MINI_HEADER));
        assert!(!has_cap(&[0x0b], 2));
        assert!(!has_cap(&[], 0));
    }

    fn header(magic: &[u8; 4], major: u32, size: u32) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(magic);
        h[4..8].copy_from_slice(&major.to_le_bytes());
        h[8..12].copy_from_slice(&2u32.to_le_bytes());
        h[12..].copy_from_slice(&size.to_le_bytes());
        h
    }

    #[test]
    fn link_header_checks_magic_version_and_size() {
        assert_eq!(parse_link_header(&header(b"REDQ", 2, 182)).unwrap(), 182);

        let err = parse_link_header(&header(b"HTTP", 2, 182)).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let err = parse_link_header(&header(b"REDQ", 1, 182)).unwrap_err();
        assert!(err.to_string().contains("major version 1"), "{err}");
        let err = parse_link_header(&header(b"REDQ", 2, 177)).unwrap_err();
        assert!(err.to_string().contains("size 177"), "{err}");
        let err = parse_link_header(&header(b"REDQ", 2, 0x7fff_ffff)).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
    }

    fn reply_body(num_common: u32, caps_offset: u32, words: &[u32]) -> Vec<u8> {
        let mut body = 7u32.to_le_bytes().to_vec();
        body.extend(0..162u8);
        for w in [num_common, 1, caps_offset] {
            body.extend_from_slice(&w.to_le_bytes());
        }
        for w in words {
            body.extend_from_slice(&w.to_le_bytes());
        }
        body
    }

    #[test]
    fn link_reply_fields_and_caps() {
        let reply = parse_link_reply(&reply_body(1, 178, &[0x0b, 0x20])).unwrap();

        assert_eq!(reply.error, 7);
        assert_eq!(reply.pub_key.len(), 162);
        assert_eq!(reply.pub_key[161], 161);
        assert_eq!(reply.common_caps, vec![0x0b]);
        assert_eq!(reply.channel_caps, vec![0x20]);
    }

    #[test]
    fn link_reply_with_caps_past_its_end_is_an_error() {
        let err = parse_link_reply(&reply_body(1000, 178, &[0x0b])).unwrap_err();
        assert!(err.to_string().contains("cap words do not fit"), "{err}");
        let err = parse_link_reply(&reply_body(1, 9999, &[0x0b, 0])).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        let err = parse_link_reply(&[0; 20]).unwrap_err();
        assert!(err.to_string().contains("needs 162 bytes"), "{err}");
    }

    #[test]
    fn mini_and_full_headers_frame_the_same_message() {
        let mini = encode_message(0x0123, &[9, 8, 7], true, 5);
        assert_eq!(mini, [0x23, 0x01, 3, 0, 0, 0, 9, 8, 7]);
        let full = encode_message(0x0123, &[9, 8, 7], false, 5);
        assert_eq!(
            full,
            [5, 0, 0, 0, 0, 0, 0, 0, 0x23, 0x01, 3, 0, 0, 0, 0, 0, 0, 0, 9, 8, 7]
        );

        let want = Message {
            kind: 0x0123,
            body: vec![9, 8, 7],
        };
        assert_eq!(read_message(&mut &mini[..], true, 100).unwrap(), want);
        assert_eq!(read_message(&mut &full[..], false, 100).unwrap(), want);
    }

    #[test]
    fn back_to_back_messages_read_in_order() {
        let stream = [
            encode_message(3, &[1], true, 1),
            encode_message(4, &[], true, 2),
        ]
        .concat();
        let mut r = &stream[..];

        assert_eq!(read_message(&mut r, true, 10).unwrap().kind, 3);
        assert_eq!(
            read_message(&mut r, true, 10).unwrap().body,
            Vec::<u8>::new()
        );
        assert!(matches!(
            read_message(&mut r, true, 10),
            Err(ClientError::Closed)
        ));
    }

    #[test]
    fn a_huge_size_is_refused_before_reading_the_body() {
        let header = [0x2e, 0x01, 0xff, 0xff, 0xff, 0xff];
        let err = read_message(&mut &header[..], true, 1 << 20).unwrap_err();

        assert!(matches!(err, ClientError::Protocol(_)));
        assert_eq!(
            err.to_string(),
            "protocol violation: message type 302 claims 4294967295 bytes, \
             over the 1048576-byte limit"
        );
    }

    #[test]
    fn a_cut_message_is_an_io_error_not_a_clean_close() {
        let cut = [0x66, 0x00, 10, 0, 0, 0, 1, 2];
        let err = read_message(&mut &cut[..], true, 100).unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Io {
                    step: "read a message body",
                    ..
                }
            ),
            "{err}"
        );

        let err = read_message(&mut &cut[..3], true, 100).unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Io {
                    step: "read a message header",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_sub_message_list_is_refused() {
        let mut full = encode_message(8, &[0; 4], false, 1);
        full[14] = 1;
        let err = read_message(&mut &full[..], false, 100).unwrap_err();
        assert!(err.to_string().contains("sub-message list"), "{err}");
    }

    #[test]
    fn bytes_reader_reads_little_endian_and_stops_at_the_end() {
        let buf = [1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff];
        let mut b = Bytes::new(&buf, "test");

        assert_eq!(b.u16().unwrap(), 0x0201);
        assert_eq!(b.u32().unwrap(), 0x0605_0403);
        assert_eq!(b.u8().unwrap(), 7);
        assert_eq!(b.remaining(), 3);
        assert!(b.u32().is_err());
        assert_eq!(b.u8().unwrap(), 8);
        assert_eq!(b.i16().unwrap(), -1);
    }
}
