// SPDX-License-Identifier: Apache-2.0
//! The link stage every channel connection starts with (reference section 2): the client's
//! `SpiceLinkHeader` and `SpiceLinkMess`, our `SpiceLinkReply` with a fresh RSA-1024 key, the
//! authentication mechanism and the RSA-OAEP encrypted ticket.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, RsaPrivateKey};
use subtle::ConstantTimeEq;

use crate::proto::*;
use crate::wire::{HeaderKind, Reader, Writer};

/// Largest link message accepted (spice-server's limit).
const MAX_LINK_SIZE: u32 = 4096;
/// Most capability words accepted in a link message (spice-server's limit).
const MAX_CAP_WORDS: u32 = 1024;
/// Keys generated ahead of time, so a link does not wait for key generation: one client
/// links four channels at once.
const KEY_POOL_SIZE: usize = 4;

/// Why a link was refused: the link error code to send (if any) and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct LinkRefusal {
    /// `SPICE_LINK_ERR_*` to answer with, or `None` to close without answering (not SPICE).
    pub code: Option<u32>,
    /// What was wrong, for the log line.
    pub reason: String,
}

impl LinkRefusal {
    fn new(code: Option<u32>, reason: impl Into<String>) -> Self {
        LinkRefusal {
            code,
            reason: reason.into(),
        }
    }
}

/// The client's `SpiceLinkMess`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMess {
    /// 0 for the main channel, the session id for the others.
    pub connection_id: u32,
    /// `SPICE_CHANNEL_*`.
    pub channel_type: u8,
    /// Channel instance.
    pub channel_id: u8,
    /// Common capability words.
    pub common_caps: Vec<u32>,
    /// Channel capability words.
    pub channel_caps: Vec<u32>,
}

/// Returns whether capability `bit` is set in `words`.
pub fn has_cap(words: &[u32], bit: u32) -> bool {
    let word = usize::try_from(bit / 32).unwrap_or(usize::MAX);
    words.get(word).is_some_and(|w| w & (1 << (bit % 32)) != 0)
}

/// Checks the 12 header bytes after the magic and returns the size of the link message.
pub fn parse_header(rest: &[u8; 12]) -> Result<u32, LinkRefusal> {
    let mut r = Reader::new(rest);
    let (major, _minor, size) = (
        r.u32().unwrap_or(0),
        r.u32().unwrap_or(0),
        r.u32().unwrap_or(0),
    );
    if major != VERSION_MAJOR {
        let reason = format!("protocol major version {major}, not 2");
        return Err(LinkRefusal::new(Some(LINK_ERR_VERSION_MISMATCH), reason));
    }
    if !(LINK_MESS_SIZE..=MAX_LINK_SIZE).contains(&size) {
        let reason = format!("link message size {size} out of range");
        return Err(LinkRefusal::new(Some(LINK_ERR_INVALID_DATA), reason));
    }
    Ok(size)
}

/// Parses a `SpiceLinkMess` and its capability words.
pub fn parse_mess(body: &[u8]) -> Result<LinkMess, LinkRefusal> {
    let invalid = |reason: &str| LinkRefusal::new(Some(LINK_ERR_INVALID_DATA), reason);
    let mut r = Reader::new(body);
    let truncated = |_| invalid("truncated link message");
    let connection_id = r.u32().map_err(truncated)?;
    let channel_type = r.u8().map_err(truncated)?;
    let channel_id = r.u8().map_err(truncated)?;
    let num_common = r.u32().map_err(truncated)?;
    let num_channel = r.u32().map_err(truncated)?;
    let caps_offset = r.u32().map_err(truncated)?;

    let words = u64::from(num_common) + u64::from(num_channel);
    if words > u64::from(MAX_CAP_WORDS) {
        return Err(invalid("too many capability words"));
    }
    let start = usize::try_from(caps_offset).unwrap_or(usize::MAX);
    let end = u64::from(caps_offset) + words * 4;
    if start < LINK_MESS_SIZE as usize || end > body.len() as u64 {
        return Err(invalid("capabilities outside the link message"));
    }

    let mut caps = Reader::new(&body[start..]);
    let mut read_words = |n: u32| (0..n).map(|_| caps.u32().unwrap_or(0)).collect::<Vec<_>>();
    let common_caps = read_words(num_common);
    let channel_caps = read_words(num_channel);
    Ok(LinkMess {
        connection_id,
        channel_type,
        channel_id,
        common_caps,
        channel_caps,
    })
}

/// Link header plus `SpiceLinkReply` plus capability words.
pub fn encode_reply(error: u32, pub_key: &[u8], common: &[u32], channel: &[u32]) -> Vec<u8> {
    let cap_words = common.len() + channel.len();
    let size = LINK_REPLY_SIZE as usize + 4 * cap_words;
    let mut w = Writer::with_capacity(LINK_HEADER_SIZE + size);
    w.u32(MAGIC).u32(VERSION_MAJOR).u32(VERSION_MINOR);
    w.u32(u32::try_from(size).unwrap_or(u32::MAX));

    let mut key = [0u8; TICKET_PUBKEY_BYTES];
    let n = pub_key.len().min(TICKET_PUBKEY_BYTES);
    key[..n].copy_from_slice(&pub_key[..n]);
    w.u32(error).bytes(&key);
    w.u32(u32::try_from(common.len()).unwrap_or(0));
    w.u32(u32::try_from(channel.len()).unwrap_or(0));
    w.u32(LINK_REPLY_SIZE);
    for word in common.iter().chain(channel) {
        w.u32(*word);
    }
    w.finish()
}

/// The error reply spice-server sends: a reply that is all zero except `error`.
pub fn encode_error_reply(error: u32) -> Vec<u8> {
    encode_reply(error, &[], &[], &[])
}

/// Decrypts the ticket and compares it with `password` in constant time. With no password
/// any ticket that decrypts is accepted, as spice-server does with ticketing disabled.
pub fn check_ticket(key: &RsaPrivateKey, ticket: &[u8], password: Option<&str>) -> bool {
    let Ok(plain) = key.decrypt(Oaep::new::<sha1::Sha1>(), ticket) else {
        return false;
    };
    let Some(password) = password else {
        return true;
    };
    let sent = plain.split(|b| *b == 0).next().unwrap_or(&[]);
    bool::from(sent.ct_eq(password.as_bytes()))
}

/// Fresh RSA-1024 keys, made ahead by a background thread; each key serves one link.
#[derive(Debug)]
pub struct KeyPool {
    keys: Mutex<Receiver<RsaPrivateKey>>,
}

impl KeyPool {
    /// Starts the thread that keeps [`KEY_POOL_SIZE`] keys ready.
    pub fn start() -> io::Result<KeyPool> {
        let (tx, rx) = mpsc::sync_channel(KEY_POOL_SIZE);
        thread::Builder::new()
            .name("spice-keygen".into())
            .spawn(move || fill_pool(&tx))?;
        Ok(KeyPool {
            keys: Mutex::new(rx),
        })
    }

    /// Takes a fresh key, generating one here if the pool is empty.
    pub fn take(&self) -> Option<RsaPrivateKey> {
        let ready = self.keys.lock().ok().and_then(|rx| rx.try_recv().ok());
        ready.or_else(generate_key)
    }
}

fn fill_pool(tx: &SyncSender<RsaPrivateKey>) {
    while let Some(key) = generate_key() {
        if tx.send(key).is_err() {
            return;
        }
    }
}

fn generate_key() -> Option<RsaPrivateKey> {
    match RsaPrivateKey::new(&mut rand::thread_rng(), 1024) {
        Ok(key) => Some(key),
        Err(e) => {
            log::error!("spice: RSA key generation failed: {e}");
            None
        }
    }
}

/// What the link stage agreed on.
#[derive(Debug)]
pub struct Linked {
    /// The client's link message.
    pub mess: LinkMess,
    /// Data header used in both directions from now on.
    pub header: HeaderKind,
}

/// How a link ended without a channel.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The client sent something we refused (and were told why).
    #[error("link refused: {0}")]
    Refused(#[source] LinkRefusal),
    /// The socket failed or timed out.
    #[error("link I/O")]
    Io(#[source] io::Error),
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_exact_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "link stage timed out",
            ));
        }
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match stream.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Refuses the link: sends `code` (as a full reply before the key exchange, as a bare result
/// after it) and returns the error to log.
fn refuse(stream: &mut TcpStream, refusal: LinkRefusal, after_key: bool) -> LinkError {
    if let Some(code) = refusal.code {
        let bytes = match after_key {
            false => encode_error_reply(code),
            true => code.to_le_bytes().to_vec(),
        };
        // Best effort: the connection is closed right after either way.
        let _ = stream.write_all(&bytes);
    }
    LinkError::Refused(refusal)
}

/// Runs the link stage on `stream` within `timeout`. `admit` checks the channel type, id and
/// connection id and returns the link error to refuse with.
pub fn handshake(
    stream: &mut TcpStream,
    keys: &KeyPool,
    password: Option<&str>,
    timeout: Duration,
    admit: impl FnOnce(&LinkMess) -> Result<(), u32>,
) -> Result<Linked, LinkError> {
    let deadline = Instant::now() + timeout;
    let mut magic = [0u8; 4];
    read_exact_by(stream, &mut magic, deadline).map_err(LinkError::Io)?;
    if u32::from_le_bytes(magic) != MAGIC {
        let reason = format!("not a SPICE client (first bytes {magic:02x?})");
        return Err(LinkError::Refused(LinkRefusal::new(None, reason)));
    }

    let mut rest = [0u8; 12];
    read_exact_by(stream, &mut rest, deadline).map_err(LinkError::Io)?;
    let size = parse_header(&rest).map_err(|r| refuse(stream, r, false))?;
    let mut body = vec![0u8; size as usize];
    read_exact_by(stream, &mut body, deadline).map_err(LinkError::Io)?;
    let mess = parse_mess(&body).map_err(|r| refuse(stream, r, false))?;
    if let Err(code) = admit(&mess) {
        let reason = format!(
            "channel {}:{} with connection id {:#x} not admitted",
            mess.channel_type, mess.channel_id, mess.connection_id
        );
        return Err(refuse(stream, LinkRefusal::new(Some(code), reason), false));
    }

    let key = keys.take().ok_or_else(|| {
        let r = LinkRefusal::new(Some(LINK_ERR_ERROR), "no RSA key");
        refuse(stream, r, false)
    })?;
    send_key(stream, &key).map_err(LinkError::Io)?;
    authenticate(stream, &mess, &key, password, deadline)?;

    let header = match has_cap(&mess.common_caps, COMMON_CAP_MINI_HEADER) {
        true => HeaderKind::Mini,
        false => HeaderKind::Full,
    };
    Ok(Linked { mess, header })
}

/// Sends the link reply with the public half of `key` and our capabilities.
fn send_key(stream: &mut TcpStream, key: &RsaPrivateKey) -> io::Result<()> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| io::Error::other(format!("public key encoding: {e}")))?;
    let common = (1 << COMMON_CAP_AUTH_SELECTION)
        | (1 << COMMON_CAP_AUTH_SPICE)
        | (1 << COMMON_CAP_MINI_HEADER);
    stream.write_all(&encode_reply(LINK_OK, der.as_bytes(), &[common], &[]))
}

/// Reads the mechanism (when the client selects one) and the ticket, and answers the result.
fn authenticate(
    stream: &mut TcpStream,
    mess: &LinkMess,
    key: &RsaPrivateKey,
    password: Option<&str>,
    deadline: Instant,
) -> Result<(), LinkError> {
    if has_cap(&mess.common_caps, COMMON_CAP_AUTH_SELECTION) {
        let mut mechanism = [0u8; 4];
        read_exact_by(stream, &mut mechanism, deadline).map_err(LinkError::Io)?;
        let mechanism = u32::from_le_bytes(mechanism);
        if mechanism != COMMON_CAP_AUTH_SPICE {
            let reason = format!("authentication mechanism {mechanism} not offered");
            let r = LinkRefusal::new(Some(LINK_ERR_INVALID_DATA), reason);
            return Err(refuse(stream, r, true));
        }
    }

    let mut ticket = [0u8; TICKET_BYTES];
    read_exact_by(stream, &mut ticket, deadline).map_err(LinkError::Io)?;
    if !check_ticket(key, &ticket, password) {
        let r = LinkRefusal::new(Some(LINK_ERR_PERMISSION_DENIED), "wrong password");
        return Err(refuse(stream, r, true));
    }
    stream
        .write_all(&LINK_OK.to_le_bytes())
        .map_err(LinkError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePublicKey;
    use rsa::RsaPublicKey;

    fn header_rest(major: u32, size: u32) -> [u8; 12] {
        let mut w = Writer::default();
        w.u32(major).u32(2).u32(size);
        w.finish().try_into().unwrap()
    }

    #[test]
    fn header_checks_version_and_size() {
        assert_eq!(parse_header(&header_rest(2, 26)), Ok(26));
        let refused = |major, size| parse_header(&header_rest(major, size)).unwrap_err().code;
        assert_eq!(refused(1, 26), Some(LINK_ERR_VERSION_MISMATCH));
        assert_eq!(refused(2, 17), Some(LINK_ERR_INVALID_DATA));
        assert_eq!(refused(2, 4097), Some(LINK_ERR_INVALID_DATA));
        assert_eq!(refused(2, u32::MAX), Some(LINK_ERR_INVALID_DATA));
    }

    /// The main-channel link of reference section 2.6.
    const MAIN_LINK: [u8; 26] = [
        0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x12, 0, 0, 0, 0x0d, 0, 0, 0, 0x0f, 0, 0, 0,
    ];

    #[test]
    fn link_message_parses_caps() {
        let mess = parse_mess(&MAIN_LINK).unwrap();
        assert_eq!(mess.connection_id, 0);
        assert_eq!(mess.channel_type, CHANNEL_MAIN);
        assert_eq!(mess.common_caps, [0x0d]);
        assert_eq!(mess.channel_caps, [0x0f]);
        assert!(has_cap(&mess.common_caps, COMMON_CAP_MINI_HEADER));
        assert!(!has_cap(&mess.common_caps, COMMON_CAP_AUTH_SPICE));
        assert!(!has_cap(&mess.common_caps, 40));
    }

    #[test]
    fn link_message_refusals() {
        let invalid = |body: &[u8]| parse_mess(body).unwrap_err().code;
        assert_eq!(invalid(&MAIN_LINK[..17]), Some(LINK_ERR_INVALID_DATA));

        let mut offset_inside = MAIN_LINK;
        offset_inside[14] = 10;
        assert_eq!(invalid(&offset_inside), Some(LINK_ERR_INVALID_DATA));

        let mut too_many = MAIN_LINK;
        too_many[6..10].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(invalid(&too_many), Some(LINK_ERR_INVALID_DATA));

        let mut past_end = MAIN_LINK;
        past_end[10] = 2;
        assert_eq!(invalid(&past_end), Some(LINK_ERR_INVALID_DATA));
    }

    #[test]
    fn reply_layout() {
        let reply = encode_reply(0, &[0xab; 162], &[0x0b], &[]);
        assert_eq!(reply.len(), 16 + 178 + 4);
        assert_eq!(
            &reply[..16],
            &[0x52, 0x45, 0x44, 0x51, 2, 0, 0, 0, 2, 0, 0, 0, 182, 0, 0, 0]
        );
        assert_eq!(&reply[16..20], &[0, 0, 0, 0]);
        assert_eq!(reply[20], 0xab);
        assert_eq!(reply[181], 0xab);
        assert_eq!(
            &reply[182..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 178, 0, 0, 0, 0x0b, 0, 0, 0]
        );

        let error = encode_error_reply(LINK_ERR_PERMISSION_DENIED);
        assert_eq!(error.len(), 16 + 178);
        assert_eq!(&error[16..20], &[7, 0, 0, 0]);
        assert!(error[20..].iter().take(162).all(|b| *b == 0));
    }

    #[test]
    fn key_is_162_bytes_of_spki_der() {
        let key = generate_key().unwrap();
        let der = key.to_public_key().to_public_key_der().unwrap();
        assert_eq!(der.as_bytes().len(), TICKET_PUBKEY_BYTES);
        assert!(RsaPublicKey::from_public_key_der(der.as_bytes()).is_ok());
    }

    #[test]
    fn ticket_check() {
        let key = generate_key().unwrap();
        let public = key.to_public_key();
        let encrypt = |plain: &[u8]| {
            let mut rng = rand::thread_rng();
            public
                .encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), plain)
                .unwrap()
        };
        assert!(check_ticket(&key, &encrypt(b"secret\0"), Some("secret")));
        assert!(!check_ticket(&key, &encrypt(b"secreT\0"), Some("secret")));
        assert!(!check_ticket(
            &key,
            &encrypt(b"secret-longer\0"),
            Some("secret")
        ));
        assert!(!check_ticket(&key, &encrypt(b"\0"), Some("secret")));
        assert!(check_ticket(&key, &encrypt(b"\0"), None));
        assert!(check_ticket(&key, &encrypt(b"anything\0"), None));
        assert!(!check_ticket(&key, &[0x55; 128], None));
        assert!(!check_ticket(&key, &[0x55; 12], Some("secret")));
    }
}
