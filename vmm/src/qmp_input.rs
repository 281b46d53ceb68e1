// SPDX-License-Identifier: Apache-2.0
//! QMP's `input-send-event`: keys, mouse buttons and relative motion for the PS/2 keyboard
//! and mouse, in the shape QEMU takes them.
//!
//! ```json
//! {"execute": "input-send-event", "arguments": {"events": [
//!     {"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}},
//!     {"type": "key", "data": {"down": false, "key": {"type": "number", "data": 200}}},
//!     {"type": "rel", "data": {"axis": "x", "value": 10}},
//!     {"type": "btn", "data": {"down": true, "button": "left"}}]}}
//! ```
//!
//! A `number` key is what QEMU calls a "qnum": a set 1 make code, with bit 7 standing for the
//! 0xe0 prefix (0xc8 is Up, 0x9d Right Ctrl), and 0xc6 for Pause. As an extension a number
//! may also be written with its prefix, 0xe000-0xe0ff (0xe048 is Up). Every event is checked
//! before any is sent: a malformed one fails the whole command. Consecutive `rel` events are
//! sent as one motion, as QEMU syncs them. `abs` events, `device` and `head` are refused: the
//! PS/2 mouse is relative and the only input device.

use devices::legacy::{InputHandle, MouseButton, PAUSE_KEY};
use serde_json::Value;

/// One checked event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// A key press or release; the code is as [`InputHandle::key`] takes it.
    Key {
        /// The set 1 code.
        code: u32,
        /// Pressed or released.
        down: bool,
    },
    /// Relative motion, right and down.
    Motion(i32, i32),
    /// A mouse button.
    Button(MouseButton, bool),
}

/// Checks the `arguments` of `input-send-event` and returns its events, or why they are bad.
pub fn parse_events(arguments: &Value) -> Result<Vec<InputEvent>, String> {
    for refused in ["device", "head"] {
        if arguments.get(refused).is_some() {
            return Err(format!("input-send-event: \"{refused}\" is not supported"));
        }
    }
    let events = arguments
        .get("events")
        .and_then(Value::as_array)
        .ok_or("input-send-event needs an \"events\" array")?;

    let mut parsed = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let event = parse_event(event).map_err(|why| format!("events[{index}]: {why}"))?;
        match (parsed.last_mut(), event) {
            (Some(InputEvent::Motion(x, y)), InputEvent::Motion(dx, dy)) => {
                *x = x.saturating_add(dx);
                *y = y.saturating_add(dy);
            }
            _ => parsed.push(event),
        }
    }
    Ok(parsed)
}

/// Sends checked events to the keyboard and mouse.
pub fn send_events(input: &InputHandle, events: &[InputEvent]) {
    for event in events {
        match *event {
            InputEvent::Key { code, down } => {
                // parse_events only lets through codes that key() takes.
                let _ = input.key(code, down);
            }
            InputEvent::Motion(dx, dy) => input.mouse_motion(dx, dy, input.buttons()),
            InputEvent::Button(button, down) => {
                let buttons = if down {
                    input.buttons() | button.mask()
                } else {
                    input.buttons() & !button.mask()
                };
                input.mouse_button(button, down, buttons);
            }
        }
    }
}

fn parse_event(event: &Value) -> Result<InputEvent, String> {
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .ok_or("an event needs a \"type\" string")?;
    let data = event.get("data").ok_or("an event needs \"data\"")?;
    match kind {
        "key" => parse_key(data),
        "btn" => parse_button(data),
        "rel" => parse_motion(data),
        "abs" => {
            Err("absolute pointer events are not supported (the PS/2 mouse is relative)".into())
        }
        other => Err(format!("unknown event type \"{other}\"")),
    }
}

fn down(data: &Value) -> Result<bool, String> {
    data.get("down")
        .and_then(Value::as_bool)
        .ok_or_else(|| "needs a \"down\" boolean".into())
}

fn parse_key(data: &Value) -> Result<InputEvent, String> {
    let down = down(data)?;
    let key = data.get("key").ok_or("a key event needs \"key\"")?;
    let value = key.get("data");
    let code = match key.get("type").and_then(Value::as_str) {
        Some("qcode") => {
            let name = value
                .and_then(Value::as_str)
                .ok_or("a qcode key needs a string")?;
            qcode(name).ok_or_else(|| format!("unknown qcode \"{name}\""))?
        }
        Some("number") => {
            let number = value
                .and_then(Value::as_u64)
                .ok_or("a number key needs a non-negative integer")?;
            key_number(number).ok_or_else(|| format!("{number:#x} is not a key number"))?
        }
        _ => return Err("a key's \"type\" must be \"qcode\" or \"number\"".into()),
    };
    Ok(InputEvent::Key { code, down })
}

/// The set 1 code of a QEMU key number (qnum), or of an 0xe0xx number.
fn key_number(number: u64) -> Option<u32> {
    let number = u32::try_from(number).ok()?;
    let code = match number {
        QNUM_PAUSE => PAUSE_KEY,
        0x01..=0x7f => number,
        0x81..=0xff => 0xe000 | (number & 0x7f),
        0xe001..=0xe07f => number,
        _ => return None,
    };
    Some(code)
}

/// QEMU's number for Pause (an 0xe0 0x46 that PS/2 keyboards send as the e1 sequence).
const QNUM_PAUSE: u32 = 0xc6;

fn parse_button(data: &Value) -> Result<InputEvent, String> {
    let down = down(data)?;
    let name = data
        .get("button")
        .and_then(Value::as_str)
        .ok_or("a btn event needs a \"button\" string")?;
    let button = match name {
        "left" => MouseButton::Left,
        "middle" => MouseButton::Middle,
        "right" => MouseButton::Right,
        "wheel-up" => MouseButton::WheelUp,
        "wheel-down" => MouseButton::WheelDown,
        "side" => MouseButton::Side,
        "extra" => MouseButton::Extra,
        other => return Err(format!("unknown button \"{other}\"")),
    };
    Ok(InputEvent::Button(button, down))
}

fn parse_motion(data: &Value) -> Result<InputEvent, String> {
    let value = data
        .get("value")
        .and_then(Value::as_i64)
        .ok_or("a rel event needs an integer \"value\"")?;
    let value = i32::try_from(value).map_err(|_| format!("rel value {value} is out of range"))?;
    match data.get("axis").and_then(Value::as_str) {
        Some("x") => Ok(InputEvent::Motion(value, 0)),
        Some("y") => Ok(InputEvent::Motion(0, value)),
        _ => Err("a rel event's \"axis\" must be \"x\" or \"y\"".into()),
    }
}

/// The set 1 code of a QEMU qcode name (the QAPI `QKeyCode` spelling).
fn qcode(name: &str) -> Option<u32> {
    if let Some(code) = QCODES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c) {
        return Some(code);
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ 'a'..='z'), None) => Some(letter(c)),
        (Some(c @ '0'..='9'), None) => Some(digit(c)),
        _ => function_key(name),
    }
}

/// Set 1 codes of the letters, by rows of the keyboard.
fn letter(c: char) -> u32 {
    const ROWS: [(&str, u32); 3] = [("qwertyuiop", 0x10), ("asdfghjkl", 0x1e), ("zxcvbnm", 0x2c)];
    ROWS.iter()
        .find_map(|(row, first)| row.find(c).map(|i| first + u32::try_from(i).unwrap_or(0)))
        .unwrap_or(0)
}

/// Set 1 codes of the digits: 1 to 9 are 0x02-0x0a, 0 is 0x0b.
fn digit(c: char) -> u32 {
    match c.to_digit(10) {
        Some(0) | None => 0x0b,
        Some(d) => d + 1,
    }
}

/// F1-F10 are 0x3b-0x44, F11 and F12 0x57 and 0x58.
fn function_key(name: &str) -> Option<u32> {
    let n: u32 = name.strip_prefix('f')?.parse().ok()?;
    match n {
        1..=10 => Some(0x3a + n),
        11 | 12 => Some(0x4c + n),
        _ => None,
    }
}

/// The other keys: set 1 code, 0xe0xx for prefixed keys.
const QCODES: &[(&str, u32)] = &[
    ("esc", 0x01),
    ("minus", 0x0c),
    ("equal", 0x0d),
    ("backspace", 0x0e),
    ("tab", 0x0f),
    ("bracket_left", 0x1a),
    ("bracket_right", 0x1b),
    ("ret", 0x1c),
    ("ctrl", 0x1d),
    ("semicolon", 0x27),
    ("apostrophe", 0x28),
    ("grave_accent", 0x29),
    ("shift", 0x2a),
    ("backslash", 0x2b),
    ("comma", 0x33),
    ("dot", 0x34),
    ("slash", 0x35),
    ("shift_r", 0x36),
    ("kp_multiply", 0x37),
    ("alt", 0x38),
    ("spc", 0x39),
    ("caps_lock", 0x3a),
    ("num_lock", 0x45),
    ("scroll_lock", 0x46),
    ("kp_7", 0x47),
    ("kp_8", 0x48),
    ("kp_9", 0x49),
    ("kp_subtract", 0x4a),
    ("kp_4", 0x4b),
    ("kp_5", 0x4c),
    ("kp_6", 0x4d),
    ("kp_add", 0x4e),
    ("kp_1", 0x4f),
    ("kp_2", 0x50),
    ("kp_3", 0x51),
    ("kp_0", 0x52),
    ("kp_decimal", 0x53),
    ("sysrq", 0x54),
    ("less", 0x56),
    ("kp_equals", 0x59),
    ("kp_enter", 0xe01c),
    ("ctrl_r", 0xe01d),
    ("kp_divide", 0xe035),
    ("print", 0xe037),
    ("alt_r", 0xe038),
    ("home", 0xe047),
    ("up", 0xe048),
    ("pgup", 0xe049),
    ("left", 0xe04b),
    ("right", 0xe04d),
    ("end", 0xe04f),
    ("down", 0xe050),
    ("pgdn", 0xe051),
    ("insert", 0xe052),
    ("delete", 0xe053),
    ("meta_l", 0xe05b),
    ("meta_r", 0xe05c),
    ("menu", 0xe05d),
    ("pause", PAUSE_KEY),
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key(kind: &str, data: Value, down: bool) -> Value {
        json!({"type": "key", "data": {"down": down, "key": {"type": kind, "data": data}}})
    }

    fn codes(events: Vec<Value>) -> Vec<InputEvent> {
        parse_events(&json!({ "events": events })).unwrap()
    }

    #[test]
    fn qcodes_map_to_set_1() {
        let names = [
            ("a", 0x1e),
            ("q", 0x10),
            ("m", 0x32),
            ("l", 0x26),
            ("1", 0x02),
            ("9", 0x0a),
            ("0", 0x0b),
            ("f1", 0x3b),
            ("f10", 0x44),
            ("f11", 0x57),
            ("f12", 0x58),
            ("ret", 0x1c),
            ("spc", 0x39),
            ("kp_enter", 0xe01c),
            ("ctrl_r", 0xe01d),
            ("up", 0xe048),
            ("pause", PAUSE_KEY),
        ];
        for (name, code) in names {
            assert_eq!(qcode(name), Some(code), "{name}");
        }
        for name in ["f0", "f13", "A", "aa", "", "kp_"] {
            assert_eq!(qcode(name), None, "{name}");
        }
    }

    #[test]
    fn numbers_follow_qemu_and_take_the_prefixed_form() {
        let events = codes(vec![
            key("number", json!(0x1e), true),
            key("number", json!(0xc8), false),
            key("number", json!(0x9d), true),
            key("number", json!(0xe048), true),
            key("number", json!(0xc6), true),
        ]);
        let keys: Vec<(u32, bool)> = events
            .iter()
            .map(|e| match e {
                InputEvent::Key { code, down } => (*code, *down),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                (0x1e, true),
                (0xe048, false),
                (0xe01d, true),
                (0xe048, true),
                (PAUSE_KEY, true)
            ]
        );
    }

    #[test]
    fn motion_is_merged_and_buttons_parsed() {
        let events = codes(vec![
            json!({"type": "rel", "data": {"axis": "x", "value": 10}}),
            json!({"type": "rel", "data": {"axis": "y", "value": -4}}),
            json!({"type": "btn", "data": {"down": true, "button": "left"}}),
            json!({"type": "rel", "data": {"axis": "x", "value": 1}}),
        ]);
        assert_eq!(
            events,
            [
                InputEvent::Motion(10, -4),
                InputEvent::Button(MouseButton::Left, true),
                InputEvent::Motion(1, 0)
            ]
        );
    }

    #[test]
    fn malformed_events_are_refused_with_their_index() {
        let bad = [
            json!({}),
            json!({"events": 3}),
            json!({"events": [], "device": "kbd"}),
            json!({"events": [{"type": "abs", "data": {"axis": "x", "value": 1}}]}),
            json!({"events": [{"type": "wiggle", "data": {}}]}),
            json!({"events": [{"type": "key"}]}),
            json!({"events": [key("qcode", json!("nope"), true)]}),
            json!({"events": [key("qcode", json!(30), true)]}),
            json!({"events": [key("number", json!(0), true)]}),
            json!({"events": [key("number", json!(0x80), true)]}),
            json!({"events": [key("number", json!(0x100), true)]}),
            json!({"events": [key("number", json!(-1), true)]}),
            json!({"events": [key("number", json!(1u64 << 40), true)]}),
            json!({"events": [{"type": "key", "data": {"key": {"type": "qcode", "data": "a"}}}]}),
            json!({"events": [{"type": "rel", "data": {"axis": "z", "value": 1}}]}),
            json!({"events": [{"type": "rel", "data": {"axis": "x", "value": 1u64 << 40}}]}),
            json!({"events": [{"type": "btn", "data": {"down": true, "button": "thumb"}}]}),
        ];
        for arguments in bad {
            assert!(parse_events(&arguments).is_err(), "{arguments}");
        }
        let why = parse_events(&json!({"events": [key("qcode", json!("a"), true), {}]}));
        assert_eq!(
            why.unwrap_err(),
            "events[1]: an event needs a \"type\" string"
        );
    }
}
