// SPDX-License-Identifier: Apache-2.0
//! End-to-end protocol tests against a minimal client on 127.0.0.1.

// Integration tests are their own crate; there is no test module to put them in.
#![allow(clippy::tests_outside_test_module)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use spice::{CursorShape, Rect};

const PW: &str = "s3cret";
const SECOND: Duration = Duration::from_secs(1);

#[test]
fn wrong_password_is_refused_and_closed() {
    let h = start(Some(PW), 64, 48);
    match link(h.addr, MAIN, 0, GTK_COMMON_CAPS, &[0xf], "wrong").unwrap() {
        LinkOutcome::AuthError(code) => assert_eq!(code, 7, "PERMISSION_DENIED"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (_main, session) = connect_main(h.addr, PW);
    assert_ne!(session, 0);
}

#[test]
fn empty_password_when_ticketing_is_disabled() {
    let h = start(None, 64, 48);
    let (_main, session) = connect_main(h.addr, "");
    assert_ne!(session, 0);
}

#[test]
fn other_channels_need_the_session_id() {
    let h = start(Some(PW), 64, 48);
    let refused = link(h.addr, DISPLAY, 1234, GTK_COMMON_CAPS, &[0], PW).unwrap();
    assert!(matches!(refused, LinkOutcome::ReplyError(8)), "{refused:?}");

    let (_main, session) = connect_main(h.addr, PW);
    let wrong = link(h.addr, DISPLAY, session ^ 1, GTK_COMMON_CAPS, &[0], PW).unwrap();
    assert!(matches!(wrong, LinkOutcome::ReplyError(8)), "{wrong:?}");
    let unknown = link(h.addr, 9, session, GTK_COMMON_CAPS, &[], PW).unwrap();
    assert!(matches!(unknown, LinkOutcome::ReplyError(9)), "{unknown:?}");
    let ok = link(h.addr, DISPLAY, session, GTK_COMMON_CAPS, &[0], PW).unwrap();
    assert!(matches!(ok, LinkOutcome::Linked(_)));
}

/// Draws with every operation and checks the client's screen pixel for pixel.
fn reconstruct(display_caps: u32, common_caps: u32) -> Screen {
    let h = start(Some(PW), 320, 200);
    let (_main, session) = connect_main(h.addr, PW);
    let mut display = match link(h.addr, DISPLAY, session, common_caps, &[display_caps], PW) {
        Ok(LinkOutcome::Linked(c)) => c,
        other => panic!("{other:?}"),
    };
    let mut init = vec![1u8];
    init.extend_from_slice(&20_971_520i64.to_le_bytes());
    init.push(1);
    init.extend_from_slice(&0i32.to_le_bytes());
    display.send(101, &init).unwrap();

    let mut screen = Screen::default();
    screen.sync_to(&mut display, &h.producer.frame(), 10 * SECOND);

    h.producer.run(|s| {
        s.fill(Rect::new(10, 10, 50, 30), 0x00ff_0000);
        s.fill(Rect::new(300, 190, 40, 40), 0x0000_ff00); // clipped by the server
        let flat = vec![0x0012_3456; 64 * 16];
        s.image(Rect::new(100, 20, 64, 16), &flat);
        let noise: Vec<u32> = (0..30 * 7)
            .map(|i: u32| i.wrapping_mul(0x0101_0f0f) & 0xff_ffff)
            .collect();
        s.image(Rect::new(5, 150, 30, 7), &noise);
        s.copy_bits(0, 0, Rect::new(150, 100, 120, 80));
        s.copy_bits(160, 110, Rect::new(150, 100, 50, 50)); // overlapping
    });
    let frame = h.producer.frame();
    screen.sync_to(&mut display, &frame, 10 * SECOND);
    screen
}

#[test]
fn display_reconstructs_with_lz4() {
    let screen = reconstruct(GTK_DISPLAY_CAPS, GTK_COMMON_CAPS);
    assert!(
        screen.seen.contains(&(304, 109)),
        "an LZ4 image: {:?}",
        screen.seen
    );
    assert!(
        screen.seen.contains(&(304, 0)),
        "incompressible noise as a bitmap"
    );
    assert!(screen.seen.contains(&(302, 255)));
    assert!(screen.seen.contains(&(104, 255)));
    let first: Vec<u16> = screen.seen.iter().take(2).map(|s| s.0).collect();
    assert_eq!(first, [314, 304], "surface create, then the image");
}

#[test]
fn display_reconstructs_with_bitmaps_and_full_headers() {
    let screen = reconstruct(0, 0x01);
    assert!(
        screen.seen.iter().all(|s| s.1 != 109),
        "no LZ4 without the cap"
    );
    assert!(screen.seen.contains(&(304, 0)));
}

#[test]
fn mode_change_resizes_the_client() {
    let h = start(None, 64, 48);
    let (_main, session) = connect_main(h.addr, "");
    let mut display = connect_display(h.addr, session, GTK_DISPLAY_CAPS, "");
    let mut screen = Screen::default();
    screen.sync_to(&mut display, &h.producer.frame(), 10 * SECOND);

    h.producer.run(|s| {
        s.sink.primary_destroyed();
        s.frame.width = 100;
        s.frame.height = 30;
        s.frame.pixels = (0..3000).map(|i| i * 7).collect();
        s.sink.primary_created(100, 30);
    });
    screen.sync_to(&mut display, &h.producer.frame(), 10 * SECOND);
    let tail: Vec<u16> = screen.seen.iter().rev().take(4).map(|s| s.0).collect();
    assert_eq!(tail, [102, 304, 314, 315], "destroy, create, image, mark");
}

#[test]
fn reconnect_replaces_the_session_and_gets_a_full_screen() {
    let h = start(Some(PW), 80, 60);
    let (mut main_a, session_a) = connect_main(h.addr, PW);
    let mut display_a = connect_display(h.addr, session_a, GTK_DISPLAY_CAPS, PW);
    let mut screen_a = Screen::default();
    screen_a.sync_to(&mut display_a, &h.producer.frame(), 10 * SECOND);

    let (_main_b, session_b) = connect_main(h.addr, PW);
    assert_ne!(session_a, session_b);
    assert!(main_a.closed_within(5 * SECOND), "old main channel closed");
    assert!(
        display_a.closed_within(5 * SECOND),
        "old display channel closed"
    );
    let stale = link(h.addr, DISPLAY, session_a, GTK_COMMON_CAPS, &[0], PW).unwrap();
    assert!(matches!(stale, LinkOutcome::ReplyError(8)));

    h.producer
        .run(|s| s.fill(Rect::new(0, 0, 10, 10), 0x00ab_cdef));
    let mut display_b = connect_display(h.addr, session_b, GTK_DISPLAY_CAPS, PW);
    let mut screen_b = Screen::default();
    screen_b.sync_to(&mut display_b, &h.producer.frame(), 10 * SECOND);
}

#[test]
fn inputs_reach_the_sink_with_motion_acks() {
    let h = start(None, 64, 48);
    let (_main, session) = connect_main(h.addr, "");
    let mut inputs = connect(h.addr, INPUTS, session, &[], "");
    assert_eq!(inputs.recv_type(101).unwrap(), [0, 0], "INPUTS_INIT");

    inputs.send(101, &0x4de0u32.to_le_bytes()).unwrap();
    inputs.send(102, &0xcde0u32.to_le_bytes()).unwrap();
    inputs.send(113, &[3, 4, 0]).unwrap();
    inputs.send(114, &[3, 0, 0]).unwrap();
    inputs.send(103, &[2, 0]).unwrap();
    for _ in 0..8 {
        inputs
            .send(111, &[5, 0, 0, 0, 0xfd, 0xff, 0xff, 0xff, 1, 0])
            .unwrap();
    }
    inputs.stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    assert_eq!(inputs.recv_type(111).unwrap(), Vec::<u8>::new());
    assert_eq!(inputs.recv_type(111).unwrap(), Vec::<u8>::new());

    let log = h.inputs.0.lock().unwrap().clone();
    let mut expect = vec![
        "down 0x4de0",
        "up 0xcde0",
        "press 3 4",
        "release 3 0",
        "leds 2",
    ];
    expect.extend(["motion 5 -3 1"; 8]);
    assert_eq!(log, expect);
}

#[test]
fn cursor_init_set_move_hide() {
    let h = start(None, 64, 48);
    let shape = CursorShape {
        width: 2,
        height: 1,
        hot_x: 1,
        hot_y: 0,
        argb: vec![0xff11_2233, 0x8044_5566],
    };
    let s2 = shape.clone();
    h.producer
        .run(move |s| s.sink.cursor_set(&s2, 10, 20, true));
    let (_main, session) = connect_main(h.addr, "");
    let mut cursor = connect(h.addr, CURSOR, session, &[], "");
    cursor.stream.set_read_timeout(Some(5 * SECOND)).unwrap();

    let init = cursor.recv_type(101).unwrap();
    assert_eq!(&init[..11], &[10, 0, 20, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(init[19], 0, "ALPHA");
    assert_eq!(&init[20..28], &[2, 0, 1, 0, 1, 0, 0, 0]);
    assert_eq!(
        &init[28..],
        &[0x33, 0x22, 0x11, 0xff, 0x66, 0x55, 0x44, 0x80]
    );

    h.producer.run(|s| {
        s.sink.cursor_move(-5, 7);
        s.sink.cursor_hide();
    });
    h.producer
        .run(move |s| s.sink.cursor_set(&shape, 1, 2, true));
    assert_eq!(cursor.recv_type(104).unwrap(), [0xfb, 0xff, 7, 0]);
    assert_eq!(cursor.recv().unwrap(), (105, vec![]));
    let set = cursor.recv_type(103).unwrap();
    assert_eq!(&set[..7], &[1, 0, 2, 0, 1, 0, 0]);
}

// Malformed input: each closes only its own connection; the server keeps serving.

#[test]
fn non_spice_protocols_are_closed_at_once() {
    let h = start(Some(PW), 64, 48);
    for greeting in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"RFB "] {
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.write_all(greeting).unwrap();
        let start = Instant::now();
        assert!(closed_within(&mut s, 2 * SECOND));
        assert!(start.elapsed() < 2 * SECOND);
    }
    connect_main(h.addr, PW);
}

#[test]
fn bad_link_headers_get_an_error_reply() {
    let h = start(Some(PW), 64, 48);
    let cases: [(u32, u32, u32); 3] = [(1, 26, 4), (2, 0x00ff_ffff, 3), (2, 10, 3)];
    for (major, size, code) in cases {
        let mut s = TcpStream::connect(h.addr).unwrap();
        let header: Vec<u8> = [0x5144_4552, major, 2, size]
            .iter()
            .flat_map(|w: &u32| w.to_le_bytes())
            .collect();
        s.write_all(&header).unwrap();
        let mut reply = [0u8; 16 + 178];
        s.set_read_timeout(Some(5 * SECOND)).unwrap();
        s.read_exact(&mut reply).unwrap();
        assert_eq!(u32::from_le_bytes(reply[16..20].try_into().unwrap()), code);
        assert!(closed_within(&mut s, 2 * SECOND));
    }
    connect_main(h.addr, PW);
}

#[test]
fn stalled_handshakes_time_out() {
    let h = start(Some(PW), 64, 48);
    let mut silent = TcpStream::connect(h.addr).unwrap();
    let mut partial = TcpStream::connect(h.addr).unwrap();
    partial
        .write_all(&[0x52, 0x45, 0x44, 0x51, 2, 0, 0, 0, 2, 0])
        .unwrap();
    let start = Instant::now();
    connect_main(h.addr, PW); // served meanwhile
    assert!(closed_within(&mut silent, 15 * SECOND));
    assert!(closed_within(&mut partial, 5 * SECOND));
    assert!(
        start.elapsed() >= 9 * SECOND,
        "closed by the link timeout, not earlier"
    );
}

/// C09: absurd message sizes after authentication close that channel only.
#[test]
fn huge_message_sizes_close_only_that_channel() {
    let h = start(Some(PW), 64, 48);
    let (mut main, session) = connect_main(h.addr, PW);
    for (kind, size) in [
        (DISPLAY, 0x0040_0000u32),
        (DISPLAY, u32::MAX),
        (CURSOR, 0x0040_0000),
    ] {
        let mut c = connect(h.addr, kind, session, &[0], PW);
        let mut frame = 101u16.to_le_bytes().to_vec();
        frame.extend_from_slice(&size.to_le_bytes());
        c.stream.write_all(&frame).unwrap();
        assert!(
            c.closed_within(5 * SECOND),
            "channel {kind} size {size:#x} closed"
        );
    }
    // Unknown message types and truncated bodies too.
    let mut inputs = connect(h.addr, INPUTS, session, &[], PW);
    inputs.send(250, &[]).unwrap();
    assert!(inputs.closed_within(5 * SECOND));
    let mut inputs = connect(h.addr, INPUTS, session, &[], PW);
    inputs.send(101, &[1, 2]).unwrap();
    assert!(inputs.closed_within(5 * SECOND));

    // The session goes on.
    main.send(104, &[]).unwrap();
    main.stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    assert_eq!(main.recv_type(104).unwrap().len(), 10);
    let mut display = connect_display(h.addr, session, GTK_DISPLAY_CAPS, PW);
    Screen::default().sync_to(&mut display, &h.producer.frame(), 10 * SECOND);
}
