// SPDX-License-Identifier: Apache-2.0
//! PC keyboard scan code sets 1 and 2, and the i8042's translation from set 2 to set 1.
//!
//! Input arrives as set 1 (the XT codes SPICE and QEMU's `number` keys use): a make code, the
//! same code with bit 7 set on release, an 0xe0 prefix for the keys the AT keyboard added
//! (arrows, right Ctrl and Alt, keypad Enter and /, the editing block) and the 0xe1 sequence
//! of Pause. Set 2 codes the same key with one byte from [`SET1_TO_SET2`], an 0xf0 byte before
//! a release, and the same 0xe0/0xe1 prefixes.
//!
//! The controller's translation (command byte bit 6) is the inverse: it maps each set 2 byte
//! back to set 1 and turns an 0xf0 prefix into bit 7 of the following byte. Because it does not
//! look at prefixes, one table serves plain and 0xe0 keys alike: Right Ctrl is 0x1d in set 1 and
//! 0x14 in set 2, like Left Ctrl, only behind an 0xe0.

/// Prefix of the keys added by the 101-key keyboard (both sets).
pub const PREFIX_E0: u8 = 0xe0;
/// Prefix of the Pause key's sequence (both sets).
pub const PREFIX_E1: u8 = 0xe1;
/// Set 2 prefix of a release.
pub const SET2_BREAK: u8 = 0xf0;
/// Set 1 bit of a release.
pub const SET1_BREAK: u8 = 0x80;

/// The set 2 code of each set 1 code 0x00-0x7f, as the i8042's 7-bit translation table holds
/// them (its inverse). Two keys have set 2 codes past 0x7f that the table cannot hold: F7
/// (set 1 0x41, set 2 0x83) and Alt+SysRq (0x54, 0x84); [`set2_code`] gives those, and the
/// table keeps the aliases 0x02 and 0x7f that the controller also translates to them.
#[rustfmt::skip]
const SET1_TO_SET2: [u8; 128] = [
    // 0x00: (none), Esc, 1 2 3 4 5 6 7 8 9 0 - =, Backspace, Tab
    0x00, 0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36,
    0x3d, 0x3e, 0x46, 0x45, 0x4e, 0x55, 0x66, 0x0d,
    // 0x10: Q W E R T Y U I O P [ ], Enter, Ctrl, A S
    0x15, 0x1d, 0x24, 0x2d, 0x2c, 0x35, 0x3c, 0x43,
    0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14, 0x1c, 0x1b,
    // 0x20: D F G H J K L ; ' `, Left Shift, \, Z X C V
    0x23, 0x2b, 0x34, 0x33, 0x3b, 0x42, 0x4b, 0x4c,
    0x52, 0x0e, 0x12, 0x5d, 0x1a, 0x22, 0x21, 0x2a,
    // 0x30: B N M , . /, Right Shift, KP *, Alt, Space, Caps Lock, F1 F2 F3 F4 F5
    0x32, 0x31, 0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c,
    0x11, 0x29, 0x58, 0x05, 0x06, 0x04, 0x0c, 0x03,
    // 0x40: F6, F7 (alias), F8 F9 F10, Num Lock, Scroll Lock, KP 7 8 9 - 4 5 6 + 1
    0x0b, 0x02, 0x0a, 0x01, 0x09, 0x77, 0x7e, 0x6c,
    0x75, 0x7d, 0x7b, 0x6b, 0x73, 0x74, 0x79, 0x69,
    // 0x50: KP 2 3 0 ., SysRq (alias), (0x55), 102nd key, F11, F12, KP =, (0x5a), then the
    // codes that only come with an 0xe0 prefix: Left/Right Meta, Menu, Power, Sleep
    0x72, 0x7a, 0x70, 0x71, 0x7f, 0x60, 0x61, 0x78,
    0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f,
    // 0x60: (unassigned here; e0 63 Wake, e0 65-6d browser and mail keys)
    0x47, 0x4f, 0x56, 0x5e, 0x08, 0x10, 0x18, 0x20,
    0x28, 0x30, 0x38, 0x40, 0x48, 0x50, 0x57, 0x6f,
    // 0x70: Katakana/Hiragana, ..., RO (0x73), Henkan (0x79), Muhenkan (0x7b), Yen (0x7d)
    0x13, 0x19, 0x39, 0x51, 0x53, 0x5c, 0x5f, 0x62,
    0x63, 0x64, 0x65, 0x67, 0x68, 0x6a, 0x6d, 0x6e,
];

/// Set 1 code of F7, whose set 2 code (0x83) does not fit the 7-bit table.
const SET1_F7: u8 = 0x41;
/// Set 1 code of Alt+SysRq, whose set 2 code is 0x84.
const SET1_SYSRQ: u8 = 0x54;
/// The set 2 overrun code; the controller translates it to the set 1 overrun code 0xff.
const SET2_OVERRUN: u8 = 0x00;

/// Returns the set 2 code of the set 1 code `code` (0x00-0x7f; bit 7 is ignored).
pub fn set2_code(code: u8) -> u8 {
    match code & 0x7f {
        SET1_F7 => 0x83,
        SET1_SYSRQ => 0x84,
        code => SET1_TO_SET2[usize::from(code)],
    }
}

/// The controller's translation table: set 1 byte for each set 2 byte. Past 0x7f bytes are
/// replies (0xfa, 0xaa, 0xab, 0xee, ...) and pass unchanged, except the long codes of F7 and
/// Alt+SysRq.
static SET2_TO_SET1: [u8; 256] = translation_table();

const fn translation_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut byte: u8 = 0x80;
    loop {
        table[byte as usize] = byte;
        if byte == 0xff {
            break;
        }
        byte += 1;
    }

    let mut code: u8 = 0;
    while code < 0x80 {
        table[SET1_TO_SET2[code as usize] as usize] = code;
        code += 1;
    }
    table[SET2_OVERRUN as usize] = 0xff;
    table[0x83] = SET1_F7;
    table[0x84] = SET1_SYSRQ;
    table
}

/// Appends to `out` the set 2 bytes of the set 1 byte stream `set1`.
pub fn set1_to_set2(set1: &[u8], out: &mut Vec<u8>) {
    for &byte in set1 {
        match byte {
            PREFIX_E0 | PREFIX_E1 => out.push(byte),
            _ if byte & SET1_BREAK != 0 => out.extend([SET2_BREAK, set2_code(byte)]),
            _ => out.push(set2_code(byte)),
        }
    }
}

/// The controller's set 2 to set 1 translation, one byte at a time: an 0xf0 is held back and
/// sets bit 7 of the byte after it.
#[derive(Debug, Default)]
pub struct Translator {
    release: bool,
}

impl Translator {
    /// Returns the set 1 byte for `byte`, or None for a held-back 0xf0.
    pub fn translate(&mut self, byte: u8) -> Option<u8> {
        if byte == SET2_BREAK {
            self.release = true;
            return None;
        }

        let translated = SET2_TO_SET1[usize::from(byte)];
        if std::mem::take(&mut self.release) {
            Some(translated | SET1_BREAK)
        } else {
            Some(translated)
        }
    }

    /// Forgets a held-back 0xf0 (when translation is switched off).
    pub fn reset(&mut self) {
        self.release = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_set2(set1: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        set1_to_set2(set1, &mut out);
        out
    }

    fn translate(set2: &[u8]) -> Vec<u8> {
        let mut translator = Translator::default();
        set2.iter()
            .filter_map(|b| translator.translate(*b))
            .collect()
    }

    #[test]
    fn the_table_is_one_to_one() {
        let mut seen = [false; 128];
        for code in SET1_TO_SET2 {
            assert!(!seen[usize::from(code)], "set 2 code {code:#x} twice");
            seen[usize::from(code)] = true;
        }
    }

    #[test]
    fn letters_digits_and_function_keys_in_set_2() {
        // A, 1, Enter, Space, F1, F7, F12, Esc press and release.
        assert_eq!(to_set2(&[0x1e, 0x9e]), [0x1c, 0xf0, 0x1c]);
        assert_eq!(to_set2(&[0x02]), [0x16]);
        assert_eq!(to_set2(&[0x1c, 0x39]), [0x5a, 0x29]);
        assert_eq!(
            to_set2(&[0x3b, 0x41, 0xc1, 0x58]),
            [0x05, 0x83, 0xf0, 0x83, 0x07]
        );
        assert_eq!(to_set2(&[0x01, 0x81]), [0x76, 0xf0, 0x76]);
    }

    #[test]
    fn extended_keys_keep_their_prefix_before_the_release_byte() {
        // Up, Right Ctrl, keypad /, keypad Enter, Delete.
        assert_eq!(
            to_set2(&[0xe0, 0x48, 0xe0, 0xc8]),
            [0xe0, 0x75, 0xe0, 0xf0, 0x75]
        );
        assert_eq!(
            to_set2(&[0xe0, 0x1d, 0xe0, 0x9d]),
            [0xe0, 0x14, 0xe0, 0xf0, 0x14]
        );
        assert_eq!(
            to_set2(&[0xe0, 0x35, 0xe0, 0xb5]),
            [0xe0, 0x4a, 0xe0, 0xf0, 0x4a]
        );
        assert_eq!(to_set2(&[0xe0, 0x1c]), [0xe0, 0x5a]);
        assert_eq!(to_set2(&[0xe0, 0x53]), [0xe0, 0x71]);
        assert_eq!(to_set2(&[0xe0, 0x5b]), [0xe0, 0x1f]);
    }

    #[test]
    fn pause_becomes_the_set_2_sequence() {
        let set1 = [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5];
        let set2 = [0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77];
        assert_eq!(to_set2(&set1), set2);
        assert_eq!(translate(&set2), set1);
    }

    #[test]
    fn translation_undoes_the_conversion_for_every_code() {
        for code in 0x01..0x80u8 {
            for set1 in [[code], [code | 0x80]] {
                assert_eq!(translate(&to_set2(&set1)), set1, "code {code:#x}");
            }
            let extended = [0xe0, code, 0xe0, code | 0x80];
            assert_eq!(translate(&to_set2(&extended)), extended, "e0 {code:#x}");
        }
    }

    #[test]
    fn replies_pass_translation_except_the_long_codes() {
        assert_eq!(
            translate(&[0xfa, 0xaa, 0xab, 0x83, 0xee]),
            [0xfa, 0xaa, 0xab, 0x41, 0xee]
        );
        // The scan set numbers 1, 2, 3 as a translated keyboard reports them.
        assert_eq!(translate(&[0x01, 0x02, 0x03]), [0x43, 0x41, 0x3f]);
        assert_eq!(translate(&[0x00, 0x84]), [0xff, 0x54]);
    }
}
