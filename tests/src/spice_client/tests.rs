// SPDX-License-Identifier: Apache-2.0
//! The whole client against scripted servers on 127.0.0.1: a good session, a wrong password,
//! garbage, a huge message size and a silent server.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::thread;

use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, RsaPrivateKey};

use super::display::tests::{copy, fill, le, surface_create};
use super::*;

const TIMEOUT: Duration = Duration::from_secs(20);
const SESSION_ID: u32 = 0x1122_3344;

/// One RSA key for every scripted server (key generation is slow in debug builds).
fn key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap())
}

fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// What a scripted server saw in a client's link message.
struct Link {
    stream: TcpStream,
    channel_type: u8,
    connection_id: u32,
    channel_caps: u32,
}

/// Accepts one link, checks its header and common caps, answers with a key and caps
/// (AUTH_SELECTION, AUTH_SPICE, MINI_HEADER), and checks the ticket against `password`:
/// result 0 if it matches, PERMISSION_DENIED if not.
fn serve_link(listener: &TcpListener, password: &str) -> Link {
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut header = [0u8; 16];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header[..12], *b"REDQ\x02\0\0\0\x02\0\0\0");
    let size = u32::from_le_bytes(header[12..].try_into().unwrap());
    let mut mess = vec![0; usize::try_from(size).unwrap()];
    stream.read_exact(&mut mess).unwrap();
    let word = |at: usize| u32::from_le_bytes(mess[at..at + 4].try_into().unwrap());
    assert_eq!(
        (word(6), word(14), word(18)),
        (1, 18, 0x0b),
        "one common word: 0x0b"
    );

    let der = key().to_public_key().to_public_key_der().unwrap();
    let mut reply = b"REDQ".to_vec();
    reply.extend(le(&[2, 2, 178 + 8, 0]));
    reply.extend(der.as_bytes());
    reply.extend(le(&[1, 1, 178, 0x0b, 0]));
    stream.write_all(&reply).unwrap();

    let mut mechanism = [0u8; 4];
    stream.read_exact(&mut mechanism).unwrap();
    assert_eq!(mechanism, [1, 0, 0, 0], "AUTH_SPICE");
    let mut ticket = [0u8; 128];
    stream.read_exact(&mut ticket).unwrap();
    let plain = key().decrypt(Oaep::new::<sha1::Sha1>(), &ticket).unwrap();
    let ok = plain == [password.as_bytes(), &[0]].concat();
    stream.write_all(&le(&[if ok { 0 } else { 7 }])).unwrap();

    Link {
        channel_type: mess[4],
        connection_id: word(0),
        channel_caps: if word(10) > 0 { word(22) } else { 0 },
        stream,
    }
}

fn send(stream: &mut TcpStream, kind: u16, body: &[u8]) {
    stream
        .write_all(&wire::encode_message(kind, body, true, 0))
        .unwrap();
}

fn recv(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let message = wire::read_message(stream, true, 1 << 20).unwrap();
    (message.kind, message.body)
}

/// MAIN_INIT and a ping, then CHANNELS_LIST of `channels` once the client attached.
fn serve_main(listener: &TcpListener, password: &str, channels: &[u8]) -> TcpStream {
    let mut main = serve_link(listener, password).stream;
    send(
        &mut main,
        main_msg::INIT,
        &le(&[SESSION_ID, 1, 1, 1, 0, 10, 0, 0]),
    );
    let mut ping = le(&[7, 9, 0]);
    ping.extend([1, 2, 3]);
    send(&mut main, wire::msg::PING, &ping);
    assert_eq!(recv(&mut main), (main_msg::ATTACH_CHANNELS, vec![]));
    assert_eq!(recv(&mut main), (wire::msgc::PONG, le(&[7, 9, 0])));

    let mut list = le(&[u32::try_from(channels.len()).unwrap()]);
    list.extend(channels.iter().flat_map(|&kind| [kind, 0]));
    send(&mut main, main_msg::CHANNELS_LIST, &list);
    main
}

/// The display script: SET_ACK (window 2), a 4x2 surface filled red with a 2x1 image at
/// (1, 1), then MARK; checks DISPLAY_INIT, ACK_SYNC and one ACK.
fn serve_display(listener: &TcpListener) -> TcpStream {
    let link = serve_link(listener, "pw");
    assert_eq!((link.channel_type, link.connection_id), (2, SESSION_ID));
    assert_eq!(
        link.channel_caps, 0x60,
        "LZ4_COMPRESSION and PREF_COMPRESSION"
    );
    let mut display = link.stream;
    let (kind, init) = recv(&mut display);
    assert_eq!((kind, init.len()), (display::DISPLAY_INIT, 14));
    assert_eq!(
        recv(&mut display),
        (display::PREFERRED_COMPRESSION, vec![7])
    );

    send(&mut display, wire::msg::SET_ACK, &le(&[5, 2]));
    assert_eq!(recv(&mut display), (wire::msgc::ACK_SYNC, le(&[5])));
    send(
        &mut display,
        display::msg::SURFACE_CREATE,
        &surface_create(0, 4, 2),
    );
    send(
        &mut display,
        display::msg::DRAW_FILL,
        &fill((0, 0, 4, 2), &[], 0xff0000),
    );
    let image = copy((1, 1), &[], (2, 1), &[0x0000ff, 0x00ff00], (0, 0));
    send(&mut display, display::msg::DRAW_COPY, &image);
    assert_eq!(recv(&mut display), (wire::msgc::ACK, vec![]));
    send(&mut display, display::msg::MARK, &[]);
    display
}

/// The inputs script: INIT with Caps Lock on; checks a key press and release, then acks
/// motions in bunches of 4, checking that the client stops at 8 unacknowledged.
fn serve_inputs(listener: &TcpListener) -> TcpStream {
    let mut inputs = serve_link(listener, "pw").stream;
    send(&mut inputs, inputs_msg::INIT, &4u16.to_le_bytes());
    assert_eq!(recv(&mut inputs), (inputs_msg::KEY_DOWN, le(&[0x4de0])));
    assert_eq!(recv(&mut inputs), (inputs_msg::KEY_UP, le(&[0xcde0])));
    assert_eq!(recv(&mut inputs), (inputs_msg::MOUSE_PRESS, vec![3, 4, 0]));
    assert_eq!(
        recv(&mut inputs),
        (inputs_msg::MOUSE_RELEASE, vec![3, 0, 0])
    );

    let motion = [&le(&[5, 3])[..], &[0, 0]].concat();
    for _ in 0..8 {
        assert_eq!(
            recv(&mut inputs),
            (inputs_msg::MOUSE_MOTION, motion.clone())
        );
    }
    inputs
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let early = inputs.read(&mut [0u8; 1]).unwrap_err().kind();
    assert!(matches!(early, ErrorKind::WouldBlock | ErrorKind::TimedOut));
    inputs.set_read_timeout(Some(TIMEOUT)).unwrap();
    send(&mut inputs, inputs_msg::MOUSE_MOTION_ACK, &[]);
    send(&mut inputs, inputs_msg::MOUSE_MOTION_ACK, &[]);
    assert_eq!(recv(&mut inputs), (inputs_msg::MOUSE_MOTION, motion));
    inputs
}

#[test]
fn scripted_session_rebuilds_the_screen_and_sends_input() {
    let (listener, addr) = listen();
    let server = thread::spawn(move || {
        let main = serve_main(
            &listener,
            "pw",
            &[channel_type::DISPLAY, channel_type::INPUTS],
        );
        let display = serve_display(&listener);
        let inputs = serve_inputs(&listener);
        (main, display, inputs)
    });

    let options = Options {
        password: Some("pw".into()),
        timeout: TIMEOUT,
        compression: Some(ImageCompression::Lz4),
    };
    let mut client = SpiceClient::connect_with(addr, &options).unwrap();
    client
        .wait_quiet(Duration::from_millis(50), TIMEOUT)
        .unwrap();
    client.key(0x4de0, true).unwrap();
    client.key(0x4de0, false).unwrap();
    client.mouse_button(3, true).unwrap();
    client.mouse_button(3, false).unwrap();
    for _ in 0..9 {
        client.mouse_motion(5, 3, 0).unwrap();
    }
    let _sockets = server.join().unwrap();

    let (r, b, g) = (0xff0000, 0x0000ff, 0x00ff00);
    let screen = client.screen().unwrap();
    assert_eq!((screen.width, screen.height), (4, 2));
    assert_eq!(screen.pixels, [r, r, r, r, r, b, g, r]);
    assert_eq!(client.session_id(), SESSION_ID);
    assert_eq!(client.channels(), [(2, 0), (3, 0)]);
    let stats = client
        .wait_until("2 motion acks", TIMEOUT, |s| s.motion_acks == 2)
        .unwrap();
    assert_eq!((stats.motions_sent, stats.keyboard_modifiers), (9, 4));
    assert_eq!((stats.display_messages, stats.mouse_modes), (4, (1, 1)));
    assert!(client.failure().is_none());
}

#[test]
fn wrong_password_is_permission_denied() {
    let (listener, addr) = listen();
    let server = thread::spawn(move || serve_link(&listener, "right").stream);

    let err = SpiceClient::connect(addr, Some("wrong"), TIMEOUT)
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::PermissionDenied), "{err:?}");
    drop(server.join().unwrap());
}

#[test]
fn garbage_instead_of_a_link_reply_is_a_clear_error() {
    let (listener, addr) = listen();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.read_exact(&mut [0u8; 16]).unwrap();
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .unwrap();
        stream
    });

    let err = SpiceClient::connect(addr, None, TIMEOUT).err().unwrap();
    assert_eq!(
        err.to_string(),
        "protocol violation: link reply: bad magic [48, 54, 54, 50] (want \"REDQ\")"
    );
    drop(server.join().unwrap());
}

#[test]
fn a_huge_display_message_fails_the_channel_without_allocating_it() {
    let (listener, addr) = listen();
    let server = thread::spawn(move || {
        let main = serve_main(&listener, "", &[channel_type::DISPLAY]);
        let mut display = serve_link(&listener, "").stream;
        recv(&mut display);
        display
            .write_all(&[0x30, 0x01, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        (main, display)
    });

    let client = SpiceClient::connect(addr, None, TIMEOUT).unwrap();
    let err = client
        .wait_quiet(Duration::from_millis(50), TIMEOUT)
        .unwrap_err();
    let ClientError::ChannelFailed { channel, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*channel, "display");
    assert_eq!(
        source.to_string(),
        "protocol violation: message type 304 claims 4294967295 bytes, \
         over the 67108864-byte limit"
    );
    drop(server.join().unwrap());
}

#[test]
fn an_unsupported_image_fails_the_display_channel() {
    let (listener, addr) = listen();
    let server = thread::spawn(move || {
        let main = serve_main(&listener, "", &[channel_type::DISPLAY]);
        let mut display = serve_link(&listener, "").stream;
        recv(&mut display);
        send(
            &mut display,
            display::msg::SURFACE_CREATE,
            &surface_create(0, 4, 2),
        );
        let mut quic = copy((0, 0), &[], (1, 1), &[0], (0, 0));
        quic[65] = image::kind::QUIC;
        send(&mut display, display::msg::DRAW_COPY, &quic);
        (main, display)
    });

    let client = SpiceClient::connect(addr, None, TIMEOUT).unwrap();
    let err = client
        .wait_quiet(Duration::from_millis(50), TIMEOUT)
        .unwrap_err();
    let ClientError::ChannelFailed { source, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(source.to_string(), "unsupported: image type 1 (QUIC), 1x1");
    drop(server.join().unwrap());
}

#[test]
fn a_silent_server_times_out() {
    // The kernel completes the TCP handshake from the backlog; nobody ever answers.
    let (_listener, addr) = listen();
    let start = Instant::now();

    let err = SpiceClient::connect(addr, None, Duration::from_millis(300))
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn break_codes_set_bit_7_of_the_last_byte() {
    assert_eq!(break_code(0x1e), 0x9e);
    assert_eq!(break_code(0x4de0), 0xcde0);
    assert_eq!(break_code(0x1d_e1), 0x9d_e1);
}
