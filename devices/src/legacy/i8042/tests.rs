// SPDX-License-Identifier: Apache-2.0
//! The controller as the guest sees it through ports 0x60 and 0x64.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct CountingIrq(AtomicUsize);

impl CountingIrq {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Interrupt for CountingIrq {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct Requests(Mutex<Vec<ExitRequest>>);

impl VmExitRequester for Requests {
    fn request_exit(&self, request: ExitRequest) {
        self.0.lock().unwrap().push(request);
    }
}

struct Rig {
    i8042: I8042,
    kbd_irq: Arc<CountingIrq>,
    aux_irq: Arc<CountingIrq>,
    requests: Arc<Requests>,
}

impl Rig {
    fn new() -> Rig {
        let kbd_irq = Arc::new(CountingIrq::default());
        let aux_irq = Arc::new(CountingIrq::default());
        let requests = Arc::new(Requests::default());
        let i8042 = I8042::new(requests.clone(), kbd_irq.clone(), aux_irq.clone());
        Rig {
            i8042,
            kbd_irq,
            aux_irq,
            requests,
        }
    }

    /// A controller set up as Linux leaves it: both ports and interrupts on, translating.
    fn linux() -> Rig {
        let mut rig = Rig::new();
        rig.command(0x60);
        rig.data(CTR_TRANSLATE | CTR_SYSTEM | CTR_AUX_INT | CTR_KBD_INT);
        rig
    }

    fn command(&mut self, command: u8) {
        self.i8042.write(0x60, 4, &[command]);
    }

    fn data(&mut self, byte: u8) {
        self.i8042.write(0x60, 0, &[byte]);
    }

    fn status(&mut self) -> u8 {
        let mut value = [0];
        self.i8042.read(0x60, 4, &mut value);
        value[0]
    }

    fn read(&mut self) -> u8 {
        let mut value = [0];
        self.i8042.read(0x60, 0, &mut value);
        value[0]
    }

    /// Reads every waiting byte, as the guest's interrupt handler would.
    fn drain(&mut self) -> Vec<u8> {
        let mut bytes = Vec::new();
        while self.status() & STATUS_OBF != 0 {
            bytes.push(self.read());
        }
        bytes
    }

    /// Reads every waiting byte with the device it came from (true: aux).
    fn drain_ports(&mut self) -> Vec<(u8, bool)> {
        let mut bytes = Vec::new();
        while self.status() & STATUS_OBF != 0 {
            let aux = self.status() & STATUS_AUX_OBF != 0;
            bytes.push((self.read(), aux));
        }
        bytes
    }

    fn mouse(&mut self, bytes: &[u8]) -> Vec<(u8, bool)> {
        for byte in bytes {
            self.command(0xd4);
            self.data(*byte);
        }
        self.drain_ports()
    }

    fn type_key(&mut self, set1: &[u8]) -> Vec<u8> {
        self.i8042.type_set1(set1);
        self.drain()
    }
}

#[test]
fn power_on_status_and_command_byte() {
    let mut rig = Rig::new();
    assert_eq!(rig.status(), STATUS_UNLOCKED | STATUS_SYSTEM);
    rig.command(0x20);
    assert_eq!(
        rig.status(),
        STATUS_UNLOCKED | STATUS_SYSTEM | STATUS_COMMAND | STATUS_OBF
    );
    assert_eq!(rig.drain(), [0x65]);
    assert_eq!(rig.kbd_irq.count(), 1, "a controller reply raises IRQ 1");
}

#[test]
fn command_byte_write_and_port_enables() {
    let mut rig = Rig::new();
    rig.command(0x60);
    rig.data(0x47);
    assert_eq!(rig.status() & STATUS_COMMAND, 0, "data written last");
    rig.command(0x20);
    assert_eq!(rig.drain(), [0x47]);

    for (command, ctr) in [(0xa7, 0x67), (0xad, 0x77), (0xa8, 0x57), (0xae, 0x47)] {
        rig.command(command);
        rig.command(0x20);
        assert_eq!(rig.drain(), [ctr], "after {command:#x}");
    }
}

#[test]
fn self_and_interface_tests() {
    let mut rig = Rig::new();
    rig.command(0xaa);
    assert_eq!(rig.drain(), [0x55]);
    rig.command(0xab);
    rig.command(0xa9);
    assert_eq!(rig.drain(), [0x00, 0x00]);
}

#[test]
fn output_port_read_write_and_reset_pulses() {
    let mut rig = Rig::new();
    rig.command(0xd0);
    assert_eq!(rig.drain(), [0x03]);

    rig.command(0xd1);
    rig.data(0x03);
    rig.command(0xfd);
    rig.command(0xff);
    rig.data(0xfe);
    assert!(rig.requests.0.lock().unwrap().is_empty());

    rig.command(0xfe);
    rig.command(0xd1);
    rig.data(0x02);
    assert_eq!(
        *rig.requests.0.lock().unwrap(),
        vec![ExitRequest::Reset, ExitRequest::Reset]
    );
}

#[test]
fn writes_to_the_output_buffer_name_their_device() {
    let mut rig = Rig::linux();
    rig.command(0xd2);
    rig.data(0x5a);
    rig.command(0xd3);
    rig.data(0xa5);
    assert_eq!(rig.drain_ports(), [(0x5a, false), (0xa5, true)]);
    assert_eq!((rig.kbd_irq.count(), rig.aux_irq.count()), (1, 1));
}

#[test]
fn keyboard_replies_are_translated_like_scan_codes() {
    let mut rig = Rig::linux();
    rig.data(0xf2);
    assert_eq!(rig.drain(), [0xfa, 0xab, 0x41]);
    rig.data(0xf0);
    rig.data(0x00);
    assert_eq!(rig.drain(), [0xfa, 0xfa, 0x41]);

    rig.command(0x60);
    rig.data(CTR_KBD_INT);
    rig.data(0xf2);
    assert_eq!(rig.drain(), [0xfa, 0xab, 0x83]);
    rig.data(0xff);
    assert_eq!(rig.drain(), [0xfa, 0xaa]);
    rig.data(0xee);
    assert_eq!(rig.drain(), [0xee]);
}

#[test]
fn translated_keys_read_as_set_1() {
    let mut rig = Rig::linux();
    assert_eq!(rig.type_key(&[0x1e]), [0x1e]);
    assert_eq!(rig.type_key(&[0x9e]), [0x9e]);
    // Up, Right Ctrl, keypad /, keypad Enter: press and release.
    for code in [0x48, 0x1d, 0x35, 0x1c] {
        assert_eq!(rig.type_key(&[0xe0, code]), [0xe0, code]);
        assert_eq!(rig.type_key(&[0xe0, code | 0x80]), [0xe0, code | 0x80]);
    }
    let pause = [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5];
    assert_eq!(rig.type_key(&pause), pause);
}

#[test]
fn untranslated_keys_read_as_set_2() {
    let mut rig = Rig::linux();
    rig.command(0x60);
    rig.data(CTR_KBD_INT | CTR_AUX_INT);
    assert_eq!(rig.type_key(&[0x1e]), [0x1c]);
    assert_eq!(rig.type_key(&[0x9e]), [0xf0, 0x1c]);
    assert_eq!(rig.type_key(&[0xe0, 0x48]), [0xe0, 0x75]);
    assert_eq!(rig.type_key(&[0xe0, 0xc8]), [0xe0, 0xf0, 0x75]);
    assert_eq!(rig.type_key(&[0xe0, 0x9d]), [0xe0, 0xf0, 0x14]);
    assert_eq!(rig.type_key(&[0xe0, 0x35]), [0xe0, 0x4a]);
    assert_eq!(
        rig.type_key(&[0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]),
        [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77]
    );

    // A keyboard switched to set 1 sends set 1 untranslated.
    rig.data(0xf0);
    rig.data(0x01);
    assert_eq!(rig.drain(), [0xfa, 0xfa]);
    assert_eq!(rig.type_key(&[0xe0, 0xc8]), [0xe0, 0xc8]);
}

#[test]
fn the_mouse_answers_through_command_0xd4_with_the_aux_bit() {
    let mut rig = Rig::linux();
    let aux = |bytes: &[u8]| bytes.iter().map(|b| (*b, true)).collect::<Vec<_>>();
    assert_eq!(rig.mouse(&[0xff]), aux(&[0xfa, 0xaa, 0x00]));
    assert_eq!(rig.mouse(&[0xf2]), aux(&[0xfa, 0x00]));
    assert_eq!(
        rig.mouse(&[0xf3, 200, 0xf3, 100, 0xf3, 80, 0xf2]),
        aux(&[0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0x03])
    );
    assert_eq!(rig.mouse(&[0xf4]), aux(&[0xfa]));

    rig.i8042.mouse_report(10, -3, 1, 0x01);
    assert_eq!(rig.drain_ports(), aux(&[0x09, 10, 3, 1]));
    assert_eq!(rig.aux_irq.count(), 18, "one IRQ 12 per byte");
    assert_eq!(rig.kbd_irq.count(), 0);
}

#[test]
fn one_output_buffer_serves_both_devices_in_turn() {
    let mut rig = Rig::linux();
    rig.mouse(&[0xf4]);
    rig.i8042.type_set1(&[0x1e]);
    rig.i8042.mouse_report(1, 0, 0, 0);
    rig.i8042.type_set1(&[0x9e]);
    assert_eq!(
        rig.drain_ports(),
        [
            (0x1e, false),
            (0x9e, false),
            (0x08, true),
            (0x01, true),
            (0x00, true)
        ]
    );
}

#[test]
fn interrupts_follow_the_command_byte() {
    let mut rig = Rig::new();
    rig.command(0x60);
    rig.data(CTR_TRANSLATE);
    rig.i8042.type_set1(&[0x1e, 0x9e]);
    assert_eq!(rig.kbd_irq.count(), 0, "IRQ 1 disabled");
    assert_eq!(rig.status() & STATUS_OBF, STATUS_OBF);

    // Enabling the interrupt with a byte waiting raises it, as a level line would.
    rig.command(0x60);
    rig.data(CTR_TRANSLATE | CTR_KBD_INT);
    assert_eq!(rig.kbd_irq.count(), 1);
    rig.command(0x20);
    assert_eq!(
        rig.kbd_irq.count(),
        1,
        "no new edge while the buffer stays full"
    );
    // The controller's reply goes before the keyboard's next byte.
    assert_eq!(rig.drain(), [0x1e, 0x41, 0x9e]);
    assert_eq!(rig.kbd_irq.count(), 3, "one edge per byte");
}

#[test]
fn disabled_ports_hold_their_bytes() {
    let mut rig = Rig::linux();
    rig.mouse(&[0xf4]);
    rig.command(0xad);
    rig.command(0xa7);
    rig.i8042.type_set1(&[0x1e]);
    rig.i8042.mouse_report(1, 0, 0, 0);
    assert_eq!(rig.drain(), []);

    rig.command(0xa8);
    assert_eq!(rig.drain(), [0x08, 0x01, 0x00]);
    rig.command(0xae);
    assert_eq!(rig.drain(), [0x1e]);
}

#[test]
fn an_empty_buffer_reads_the_last_byte_again() {
    let mut rig = Rig::linux();
    rig.command(0xaa);
    assert_eq!(rig.read(), 0x55);
    assert_eq!(rig.read(), 0x55);
    assert_eq!(rig.status() & STATUS_OBF, 0);
}

#[test]
fn unread_replies_and_keys_are_bounded() {
    let mut rig = Rig::linux();
    for _ in 0..100 {
        rig.command(0x20);
    }
    assert_eq!(rig.drain().len(), MAX_REPLIES + 1);

    for _ in 0..1000 {
        rig.i8042.type_set1(&[0x1e]);
    }
    assert_eq!(rig.drain().len(), KEYBOARD_QUEUE_SIZE + 1);
}

#[test]
fn the_input_handle_feeds_the_device() {
    let rig = Rig::linux();
    let kbd_irq = rig.kbd_irq.clone();
    let shared = Arc::new(Mutex::new(rig.i8042));
    let handle = InputHandle::new(shared.clone());
    let mut bus: std::sync::MutexGuard<'_, I8042> = shared.lock().unwrap();
    bus.write(0x60, 0, &[0xed]);
    bus.write(0x60, 0, &[LED_CAPS_LOCK | LED_NUM_LOCK]);
    drop(bus);
    assert_eq!(handle.leds(), 0x06);

    handle.key(0xe048, true).unwrap();
    handle.key(PAUSE_KEY, false).unwrap();
    handle.key_packed(0xc8e0);
    assert_eq!(handle.key(0x1e0, true), Err(InvalidKey(0x1e0)));
    handle.mouse_button(MouseButton::Right, true, BUTTON_RIGHT);
    assert_eq!(handle.buttons(), BUTTON_RIGHT);

    let mut i8042 = shared.lock().unwrap();
    let mut bytes = Vec::new();
    loop {
        let mut status = [0];
        i8042.read(0x60, 4, &mut status);
        if status[0] & STATUS_OBF == 0 {
            break;
        }
        let mut byte = [0];
        i8042.read(0x60, 0, &mut byte);
        bytes.push(byte[0]);
    }
    assert_eq!(
        bytes,
        [0xfa, 0xfa, 0xe0, 0x48, 0xe1, 0x9d, 0xc5, 0xe0, 0xc8],
        "the mouse has reporting off"
    );
    assert_eq!(kbd_irq.count(), 9);
}

#[test]
fn no_port_sequence_panics() {
    let mut rig = Rig::linux();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let [kind, byte, ..] = seed.to_le_bytes();
        match kind % 8 {
            0 => rig.command(byte | (0x80 * u8::from(byte & 1 == 1))),
            1 | 2 => rig.data(byte),
            3 => {
                rig.read();
            }
            4 => {
                rig.status();
            }
            5 => rig.i8042.type_set1(&[byte]),
            6 => rig
                .i8042
                .mouse_report(i32::from(byte) * 1000, -i32::from(byte), 1, byte),
            _ => {
                rig.command(0xd4);
                rig.data(byte);
            }
        }
    }
}

#[test]
fn random_press_release_pairs_read_back_unchanged_when_translated() {
    // C20: after many keys read at arbitrary moments, the guest sees exactly the set 1 bytes
    // that were typed, so no key is left pressed.
    let mut rig = Rig::linux();
    let keys: [&[u8]; 6] = [
        &[0x1e],
        &[0x48],
        &[0xe0, 0x48],
        &[0xe0, 0x1d],
        &[0xe0, 0x38],
        &[0xe1, 0x1d, 0x45],
    ];
    let (mut typed, mut read) = (Vec::new(), Vec::new());
    let mut seed: u32 = 0x1234_5678;
    for _ in 0..1000 {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let key = keys[usize::try_from(seed >> 29).unwrap() % keys.len()];
        let release: Vec<u8> = key
            .iter()
            .map(|b| if *b >= 0xe0 { *b } else { b | 0x80 })
            .collect();
        for bytes in [key, &release[..]] {
            rig.i8042.type_set1(bytes);
            typed.extend_from_slice(bytes);
        }
        if seed & 0x100 != 0 {
            read.extend(rig.drain());
        } else if seed & 0x200 != 0 {
            read.push(rig.read());
        }
    }
    read.extend(rig.drain());
    assert_eq!(read, typed);
}
