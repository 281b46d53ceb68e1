// SPDX-License-Identifier: Apache-2.0
//! The vmm's SPICE server in front of its QXL device, with the project's own small guest
//! (tests/guest/qxlbench.c) drawing 16x16 tiles directly on /dev/kvm: the test SPICE client's
//! screen against `screendump`, passwords, reconnects, a client that stops reading, and bad
//! connections. The tests with Linux and remote-viewer are in spice_viewer.rs.
#![allow(clippy::tests_outside_test_module)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vmm_tests::qxlbench::*;
use vmm_tests::spice_client::{ClientError, ImageCompression, Options, SpiceClient};

const PASSWORD: &str = "s3cret-pw";
const CONNECT: Duration = Duration::from_secs(30);

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// The guest with a SPICE server on a free loopback port, with the password or without.
fn start_with_spice(test: &str, password: bool) -> Option<(Guest, SocketAddr)> {
    let port = free_port();
    let mut spice = format!("port={port}");
    if password {
        let file = std::env::temp_dir().join(format!("vmm-{test}-{}.pw", std::process::id()));
        std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
        spice.push_str(&format!(",password-file={}", file.display()));
    } else {
        spice.push_str(",disable-ticketing=on");
    }
    let guest = start(test, &["--spice".to_string(), spice])?;
    Some((guest, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}

fn connect(addr: SocketAddr, password: Option<&str>) -> SpiceClient {
    let options = Options {
        password: password.map(String::from),
        timeout: CONNECT,
        compression: Some(ImageCompression::Lz4),
    };
    SpiceClient::connect_with(addr, &options).unwrap()
}

/// The client's screen once the display has been quiet for a while.
fn quiet_screen(client: &SpiceClient) -> Vec<u32> {
    client
        .wait_quiet(Duration::from_millis(500), Duration::from_secs(60))
        .unwrap();
    let screen = client.screen().expect("a screen");
    let size = (screen.width as usize, screen.height as usize);
    assert_eq!(size, (WIDTH, HEIGHT));
    screen.pixels
}

/// Lets the guest cover its screen with tiles, then ends its load phase.
fn draw_whole_screen(guest: &mut Guest) {
    let covered = guest.wait_for(Duration::from_secs(60), |g| {
        g.drawables() > TIMED_DRAWS + TILES
    });
    assert!(covered, "the guest drew the whole screen");
    guest.finish();
}

/// The client's screen equals the screendump, pixel for pixel; a wrong password is refused;
/// a second client replaces the first and gets the whole screen of the now idle guest (C16's
/// reconnect, C17); mouse motion is acknowledged every four messages (C18).
#[test]
fn the_client_sees_the_screen_and_a_reconnect_gets_all_of_it() {
    let test = "spice_screen_and_reconnect";
    let Some((mut guest, addr)) = start_with_spice(test, true) else {
        return;
    };

    let refused = SpiceClient::connect(addr, Some("wrong"), CONNECT).err();
    assert!(
        matches!(refused, Some(ClientError::PermissionDenied)),
        "wrong password: {refused:?}"
    );

    let first = connect(addr, Some(PASSWORD));
    draw_whole_screen(&mut guest);
    let screen = quiet_screen(&first);
    assert_eq!(
        first_wrong_pixel(&screen),
        None,
        "the client shows the guest's tiles"
    );
    assert!(
        screen == guest.screendump(),
        "the client's screen is the screendump"
    );

    for _ in 0..8 {
        first.mouse_motion(1, 1, 0).unwrap();
    }
    let acked = first.wait_until("motion acks", Duration::from_secs(10), |s| {
        s.motion_acks == 2
    });
    assert!(acked.is_ok(), "{:?}", first.stats());

    let second = connect(addr, Some(PASSWORD));
    let screen = quiet_screen(&second);
    assert_eq!(
        first_wrong_pixel(&screen),
        None,
        "the new client gets the whole screen"
    );
    // Waits until the first session fails (the server closed it) or 10 s pass.
    let ended = first.wait_until("the old session to close", Duration::from_secs(10), |_| {
        false
    });
    assert!(
        first.failure().is_some(),
        "the first client is disconnected: {ended:?}"
    );
    let _ = guest.qmp.call(r#"{"execute":"quit"}"#);
}

/// C10: a client that stops reading for 30 s while the guest draws. The guest draws at its
/// usual rate, the VMM's memory stays bounded, and the client's screen is right once it reads
/// again.
#[test]
fn c10_a_client_that_stops_reading_slows_nothing() {
    let test = "spice_stalled_client";
    let Some((mut guest, addr)) = start_with_spice(test, false) else {
        return;
    };
    let client = connect(addr, None);
    let pid = guest.session.pid();

    let rate = |guest: &mut Guest, over: Duration| {
        let (before, start) = (guest.drawables(), Instant::now());
        std::thread::sleep(over);
        (guest.drawables() - before) as f64 / start.elapsed().as_secs_f64()
    };
    let reading = rate(&mut guest, Duration::from_secs(5));
    let rss_before = rss_kib(pid);

    client.stall(true);
    let stalled = rate(&mut guest, Duration::from_secs(30));
    let rss_stalled = rss_kib(pid);
    eprintln!(
        "drawables/s: {reading:.0} with the client reading, {stalled:.0} while it stalls; \
         vmm RSS {rss_before} -> {rss_stalled} KiB"
    );
    assert!(
        stalled > reading / 2.0,
        "the guest slowed down: {reading:.0} -> {stalled:.0}"
    );
    assert!(
        rss_stalled < rss_before + 64 * 1024,
        "memory grew without bound"
    );

    client.stall(false);
    draw_whole_screen(&mut guest);
    let screen = quiet_screen(&client);
    assert!(client.failure().is_none(), "{:?}", client.failure());
    assert_eq!(first_wrong_pixel(&screen), None, "the client caught up");
    let _ = guest.qmp.call(r#"{"execute":"quit"}"#);
}

/// C13 and C09: a half-open connection, an HTTP request, an absurd link size, a client that
/// vanishes mid-link and a flood of 300 stalled handshakes each cost only their own
/// connections; the guest draws on and a good client still gets in and gets the screen.
#[test]
fn c13_bad_connections_leave_the_guest_and_other_clients_alone() {
    let test = "spice_bad_connections";
    let Some((mut guest, addr)) = start_with_spice(test, false) else {
        return;
    };
    let drawn = guest.drawables();

    let _half_open = TcpStream::connect(addr).unwrap();
    assert_closed(
        addr,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "an HTTP request",
    );
    // "REDQ", version 2.2, then a 4 GiB link message.
    let mut huge = b"REDQ".to_vec();
    for word in [2u32, 2, u32::MAX] {
        huge.extend_from_slice(&word.to_le_bytes());
    }
    assert_closed(addr, &huge, "an absurd link size");
    let mut vanishing = TcpStream::connect(addr).unwrap();
    vanishing.write_all(b"REDQ").unwrap();
    drop(vanishing);

    let drew_on = guest.wait_for(Duration::from_secs(10), |g| g.drawables() > drawn);
    assert!(drew_on, "the guest drew on");

    // C13 (d): a flood of stalled handshakes (10 valid header bytes each) does not keep a real
    // client out, and the server's descriptors return to their baseline once it is over.
    let pid = guest.session.pid();
    let first = connect(addr, None);
    std::thread::sleep(Duration::from_secs(1));
    let baseline = open_fds(pid);
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&huge[..10]).unwrap();
            s
        })
        .collect();
    // The new session replaces the first one and holds as many descriptors.
    let client = connect(addr, None);
    drop(flood);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid) > baseline {
        assert!(
            Instant::now() < deadline,
            "descriptors: {} over {baseline}",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    draw_whole_screen(&mut guest);
    assert_eq!(first_wrong_pixel(&quiet_screen(&client)), None);
    let _ = guest.qmp.call(r#"{"execute":"quit"}"#);
}

/// Sends `bytes` and expects the server to close the connection within 15 s (it may answer
/// first, e.g. with a link error).
fn assert_closed(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: not closed within 15 s ({e})"),
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => panic!("{what}: the server kept the connection open"),
        }
    }
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Resident memory of process `pid`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
