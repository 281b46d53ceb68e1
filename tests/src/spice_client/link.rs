// SPDX-License-Identifier: Apache-2.0
//! Linking one channel: the link messages, the auth mechanism word, the RSA-OAEP ticket and
//! the link result. Every read and write is bounded by the caller's deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};

use super::wire::{self, common_cap, has_cap, io_error, link_err, LinkReply, LinkRequest};
use super::ClientError;

/// A linked channel: the socket, ready for data messages.
#[derive(Debug)]
pub struct Linked {
    /// The channel's connection.
    pub stream: TcpStream,
    /// Whether both directions use the mini header (the server advertised it; this client
    /// always does).
    pub mini: bool,
}

/// Time left until `deadline`, or a timeout error naming `step`.
pub fn remaining(deadline: Instant, step: &str) -> Result<Duration, ClientError> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(ClientError::Timeout(step.to_string())),
    }
}

/// Connects to `addr` and links the channel of `request` with `password` (empty for none).
pub fn link(
    addr: SocketAddr,
    request: &LinkRequest,
    password: &str,
    deadline: Instant,
) -> Result<Linked, ClientError> {
    if password.len() > wire::MAX_PASSWORD_LEN {
        return Err(ClientError::PasswordTooLong);
    }
    let left = remaining(deadline, "connect")?;
    let mut stream = TcpStream::connect_timeout(&addr, left).map_err(|e| io_error("connect", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| io_error("set TCP_NODELAY", e))?;

    write(
        &mut stream,
        &request.encode(),
        deadline,
        "send the link message",
    )?;
    let reply = read_link_reply(&mut stream, deadline)?;
    check_link_result(request.channel_type, reply.error)?;

    if has_cap(&reply.common_caps, common_cap::PROTOCOL_AUTH_SELECTION) {
        if !has_cap(&reply.common_caps, common_cap::AUTH_SPICE) {
            return Err(ClientError::Unsupported(
                "the server offers no SPICE ticket authentication".into(),
            ));
        }
        let mechanism = wire::AUTH_MECHANISM_SPICE.to_le_bytes();
        write(&mut stream, &mechanism, deadline, "send the auth mechanism")?;
    }
    let ticket = encrypt_ticket(&reply.pub_key, password)?;
    write(&mut stream, &ticket, deadline, "send the ticket")?;

    let mut result = [0u8; 4];
    read(&mut stream, &mut result, deadline, "read the link result")?;
    check_link_result(request.channel_type, u32::from_le_bytes(result))?;

    Ok(Linked {
        stream,
        mini: has_cap(&reply.common_caps, common_cap::MINI_HEADER),
    })
}

/// Maps a link error code: PERMISSION_DENIED on its own, anything else but OK as a refusal.
fn check_link_result(channel_type: u8, code: u32) -> Result<(), ClientError> {
    match code {
        link_err::OK => Ok(()),
        link_err::PERMISSION_DENIED => Err(ClientError::PermissionDenied),
        code => Err(ClientError::LinkRefused { channel_type, code }),
    }
}

fn read_link_reply(stream: &mut TcpStream, deadline: Instant) -> Result<LinkReply, ClientError> {
    let mut header = [0u8; wire::LINK_HEADER_SIZE];
    read(stream, &mut header, deadline, "read the link reply header")?;
    let size = wire::parse_link_header(&header)?;

    let mut body = vec![0; usize::try_from(size).expect("at most 4096")];
    read(stream, &mut body, deadline, "read the link reply")?;
    wire::parse_link_reply(&body)
}

/// The password and its terminating NUL, encrypted with the server's RSA key using OAEP with
/// SHA-1 and MGF1-SHA-1 (OpenSSL's RSA_PKCS1_OAEP_PADDING), as spice-server decrypts it.
pub fn encrypt_ticket(pub_key_der: &[u8], password: &str) -> Result<Vec<u8>, ClientError> {
    let key = RsaPublicKey::from_public_key_der(pub_key_der)
        .map_err(|e| ClientError::Protocol(format!("the server's public key: {e}")))?;
    let mut ticket = password.as_bytes().to_vec();
    ticket.push(0);

    // The rsa crate's timing advisory (RUSTSEC-2023-0071) concerns decryption with a private
    // key; the client only encrypts.
    key.encrypt(
        &mut rsa::rand_core::OsRng,
        Oaep::new::<sha1::Sha1>(),
        &ticket,
    )
    .map_err(|e| ClientError::Protocol(format!("cannot encrypt the ticket: {e}")))
}

fn read(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    step: &'static str,
) -> Result<(), ClientError> {
    stream
        .set_read_timeout(Some(remaining(deadline, step)?))
        .map_err(|e| io_error(step, e))?;
    stream.read_exact(buf).map_err(|e| io_error(step, e))
}

fn write(
    stream: &mut TcpStream,
    buf: &[u8],
    deadline: Instant,
    step: &'static str,
) -> Result<(), ClientError> {
    stream
        .set_write_timeout(Some(remaining(deadline, step)?))
        .map_err(|e| io_error(step, e))?;
    stream.write_all(buf).map_err(|e| io_error(step, e))
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::EncodePublicKey;
    use rsa::RsaPrivateKey;

    use super::*;

    #[test]
    fn ticket_decrypts_to_the_password_and_a_nul() {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let der = private.to_public_key().to_public_key_der().unwrap();
        assert_eq!(der.as_bytes().len(), wire::PUB_KEY_SIZE);

        let ticket = encrypt_ticket(der.as_bytes(), "hunter2").unwrap();
        assert_eq!(ticket.len(), 128);
        let plain = private.decrypt(Oaep::new::<sha1::Sha1>(), &ticket).unwrap();
        assert_eq!(plain, b"hunter2\0");
    }

    #[test]
    fn a_garbage_key_is_a_protocol_error() {
        let err = encrypt_ticket(&[0x30; 162], "").unwrap_err();
        assert!(err.to_string().contains("the server's public key"), "{err}");
    }

    #[test]
    fn link_results_map_to_errors() {
        assert!(check_link_result(2, 0).is_ok());
        assert!(matches!(
            check_link_result(2, 7),
            Err(ClientError::PermissionDenied)
        ));
        assert!(matches!(
            check_link_result(2, 9),
            Err(ClientError::LinkRefused {
                channel_type: 2,
                code: 9
            })
        ));
    }
}
