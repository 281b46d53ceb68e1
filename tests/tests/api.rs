// SPDX-License-Identifier: Apache-2.0
//! The control socket served by a running vmm: greeting, several clients, malformed requests
//! answered with errors while the socket keeps serving, input events, and `quit`.
//!
//! The vmm runs directly on this machine: the socket is served whether or not the guest gets
//! far in its boot, so this needs a usable /dev/kvm but not one that boots Linux.

// An integration test file is itself the test module.
#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmm_tests::*;

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &std::path::Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => panic!("connect: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = client.line();
        assert!(greeting.starts_with("{\"QMP\":"), "{greeting}");
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn ask(&mut self, request: &str) -> String {
        self.writer.write_all(request.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
        self.line()
    }
}

#[test]
fn control_socket_serves_several_clients_and_survives_bad_requests() {
    if std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs a usable /dev/kvm"
        );
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let dir = repo_root().join(format!("target/tests/api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");

    let mut vmm = Command::new(vmm_binary())
        .args(guest_args(1, TEST_CMDLINE))
        .args(["--display", "qxl", "--serial", "off", "--api-socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    let mut first = Client::connect(&socket);
    let mut second = Client::connect(&socket);
    assert!(first
        .ask("{not json")
        .contains("\"class\":\"GenericError\""));
    assert!(first
        .ask(r#"{"execute": "no-such-command"}"#)
        .contains("CommandNotFound"));
    assert!(second
        .ask(r#"{"execute": "qmp_capabilities"}"#)
        .contains("\"return\":{}"));
    assert!(second
        .ask(r#"{"execute": "query-status"}"#)
        .contains("\"status\":\"running\""));
    let qxl = first.ask(r#"{"execute": "query-qxl"}"#);
    assert!(
        qxl.contains("\"ports\"") && qxl.contains("\"queue-depth\""),
        "{qxl}"
    );
    let typed = first.ask(concat!(
        r#"{"execute": "input-send-event", "arguments": {"events": ["#,
        r#"{"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}},"#,
        r#"{"type": "rel", "data": {"axis": "x", "value": 3}}]}}"#
    ));
    assert_eq!(typed.trim(), r#"{"return":{}}"#);
    let bad_key = second.ask(concat!(
        r#"{"execute": "input-send-event", "arguments": {"events": [{"type": "key", "data": "#,
        r#"{"down": true, "key": {"type": "qcode", "data": "no-such-key"}}}]}}"#
    ));
    assert!(bad_key.contains("events[0]: unknown qcode"), "{bad_key}");
    let dump = second.ask(r#"{"execute": "screendump"}"#);
    assert!(dump.contains("needs a \\\"filename\\\""), "{dump}");

    assert!(first
        .ask(r#"{"execute": "quit"}"#)
        .contains("\"return\":{}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = vmm.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = vmm.kill();
            panic!("the vmm did not exit after quit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "the socket file is removed on exit");
}
