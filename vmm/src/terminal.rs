// SPDX-License-Identifier: Apache-2.0
//! Raw mode for the terminal on stdin, restored on every way out of the process: a normal
//! return, an error, a panic, or a terminating signal.

use std::sync::OnceLock;

/// The terminal settings found at start, restored on exit.
static SAVED: OnceLock<libc::termios> = OnceLock::new();

/// Signals after which the terminal is restored before the process dies.
const FATAL_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];

/// Puts stdin's terminal in raw mode until the guard is dropped.
pub struct RawTerminal(());

impl RawTerminal {
    /// Switches stdin to raw mode if it is a terminal; returns None if it is not.
    pub fn enter() -> Option<RawTerminal> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
            return None;
        }

        // SAFETY: termios is plain data, fully written by tcgetattr before it is read.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: stdin is a terminal and `original` is a valid termios to fill.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut original) } != 0 {
            return None;
        }
        let _ = SAVED.set(original);
        install_restore_hooks();

        let mut raw = original;
        // SAFETY: `raw` is a valid termios; cfmakeraw only changes its flags.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so that the VMM's own log lines stay readable.
        raw.c_oflag |= libc::OPOST | libc::ONLCR;
        // SAFETY: stdin is a terminal and `raw` a valid termios.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) };
        Some(RawTerminal(()))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the saved terminal settings; async-signal-safe.
fn restore() {
    if let Some(saved) = SAVED.get() {
        // SAFETY: tcsetattr is async-signal-safe and `saved` came from tcgetattr.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
    }
}

extern "C" fn restore_and_die(signal: libc::c_int) {
    restore();
    // SAFETY: resetting the handler to the default and raising the signal again are
    // async-signal-safe; the process then ends the way the signal asked.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn install_restore_hooks() {
    for signal in FATAL_SIGNALS {
        let handler = restore_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { libc::signal(signal, handler) };
    }

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
}
