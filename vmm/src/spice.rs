// SPDX-License-Identifier: Apache-2.0
//! The SPICE server (`--spice`), joined to the VM: the QXL display thread feeds it the screen
//! and cursor, and its inputs channel types on the i8042's keyboard and moves its mouse.
//!
//! The display thread hands over what changed and goes on: the server queues it per client
//! and never makes the thread wait for a socket (see the `spice` crate). When the server wants
//! parts of the screen again (a new client, or a client that fell behind), it signals an
//! eventfd that wakes the display thread, which answers from the rendered surface.
//!
//! The server lives as long as the VMM: when the guest reboots, the fresh VM attaches to it
//! again, so connected clients stay and see the new boot.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use devices::legacy::{InputHandle, MouseButton};
use devices::qxl::{self, worker::Listener, CursorState, DisplayListener};
use spice::{DisplaySink, InputSink, SpiceConfig, SpiceServer};
use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::SpiceOptions;

/// Why the SPICE server could not start.
#[derive(Debug, Error)]
pub enum SpiceStartError {
    /// The password file could not be read.
    #[error("cannot read the SPICE password file {0}")]
    PasswordFile(PathBuf, #[source] std::io::Error),
    /// The password file holds no password.
    #[error("the SPICE password file {0} is empty: put the password on its first line")]
    EmptyPassword(PathBuf),
    /// The refresh event could not be created.
    #[error("cannot create the SPICE refresh event")]
    Event(#[source] std::io::Error),
    /// The server itself could not start.
    #[error(transparent)]
    Server(#[from] spice::SpiceError),
}

/// The SPICE server for the life of the VMM, across guest reboots: each boot's VM attaches to
/// it, so that a connected client stays connected and sees the new boot.
pub struct SpiceRuntime {
    /// Serves until the VMM exits (dropping it stops the server).
    _server: SpiceServer,
    sink: DisplaySink,
    /// Signalled by the server when it wants parts of the screen again; the current display
    /// thread listens on a clone.
    refresh_evt: EventFd,
    /// The current VM's keyboard and mouse, if a VM is attached.
    input: Arc<Mutex<Option<InputHandle>>>,
}

impl SpiceRuntime {
    /// Starts the server on `options`.
    pub fn start(options: &SpiceOptions) -> Result<Self, SpiceStartError> {
        let password = match &options.password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        let config = SpiceConfig {
            addr: options.addr,
            port: options.port,
            password,
        };

        let refresh_evt = EventFd::new(EFD_NONBLOCK).map_err(SpiceStartError::Event)?;
        let wake = refresh_evt.try_clone().map_err(SpiceStartError::Event)?;
        let refresh = Box::new(move || {
            // Fails only when the counter is full, and then the display thread is awake anyway.
            let _ = wake.write(1);
        });
        let input = Arc::new(Mutex::new(None));
        let sink_input = Box::new(SpiceInput(input.clone()));
        let (server, sink) = SpiceServer::start(config, sink_input, refresh)?;
        log::info!("SPICE server listening on {}", server.local_addr());
        Ok(SpiceRuntime {
            _server: server,
            sink,
            refresh_evt,
            input,
        })
    }

    /// Attaches a freshly built VM: input goes to its i8042, and the returned listener, given
    /// to its QXL display thread, shows its screen.
    pub fn attach(&self, input: InputHandle) -> Result<Listener, SpiceStartError> {
        *lock(&self.input) = Some(input);
        let refresh_evt = self
            .refresh_evt
            .try_clone()
            .map_err(SpiceStartError::Event)?;
        let display = SpiceDisplay::new(self.sink.clone());
        Ok(Listener::new(Box::new(display), refresh_evt))
    }

    /// Detaches the VM that is going away: input is dropped until the next one attaches.
    pub fn detach(&self) {
        *lock(&self.input) = None;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first line of `path`, without its line ending.
fn read_password(path: &Path) -> Result<String, SpiceStartError> {
    let text =
        fs::read_to_string(path).map_err(|e| SpiceStartError::PasswordFile(path.into(), e))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(SpiceStartError::EmptyPassword(path.into()));
    }
    Ok(line.to_string())
}

/// Feeds the display thread's view of the screen to the SPICE server.
struct SpiceDisplay {
    sink: DisplaySink,
    /// The cursor shape last sent, so that a move does not resend the image.
    shape: Option<std::sync::Arc<qxl::CursorShape>>,
}

impl SpiceDisplay {
    fn new(sink: DisplaySink) -> Self {
        SpiceDisplay { sink, shape: None }
    }
}

impl Drop for SpiceDisplay {
    /// The display device is gone with its VM (a reboot): the client shows no surface until
    /// the next boot creates one.
    fn drop(&mut self) {
        self.sink.primary_destroyed();
    }
}

/// A QXL rectangle (clipped to the surface, so ordered and non-negative) in SPICE's terms.
fn spice_rect(rect: qxl::Rect) -> spice::Rect {
    spice::Rect::new(rect.left, rect.top, rect.width(), rect.height())
}

impl DisplayListener for SpiceDisplay {
    fn primary_created(&mut self, width: u32, height: u32) {
        self.sink.primary_created(width, height);
    }

    fn primary_destroyed(&mut self) {
        self.sink.primary_destroyed();
    }

    // The Linux driver draws everything as DRAW_COPY of dirty rectangles, so the rendered
    // pixels are sent as images. A guest that issued fills or screen-to-screen copies would
    // be better served by forwarding those as SPICE fills and copy-bits; not done yet.
    fn update(&mut self, rect: qxl::Rect, pixels: &[u32]) {
        self.sink.image(spice_rect(rect), pixels);
    }

    fn cursor(&mut self, cursor: &CursorState) {
        let Some(shape) = &cursor.shape else {
            return;
        };
        if !cursor.visible {
            self.sink.cursor_hide();
            return;
        }
        if self
            .shape
            .as_ref()
            .is_some_and(|s| std::sync::Arc::ptr_eq(s, shape))
        {
            self.sink.cursor_move(cursor.x, cursor.y);
            return;
        }
        let spice_shape = spice::CursorShape {
            width: shape.width,
            height: shape.height,
            hot_x: shape.hot_x,
            hot_y: shape.hot_y,
            argb: shape.pixels.clone(),
        };
        self.sink
            .cursor_set(&spice_shape, cursor.x, cursor.y, cursor.visible);
        self.shape = Some(shape.clone());
    }

    fn take_refresh(&mut self, out: &mut Vec<qxl::Rect>) {
        let mut rects = Vec::new();
        self.sink.take_refresh(&mut rects);
        out.extend(rects.into_iter().map(|r| {
            let right = r.x.saturating_add(i32::try_from(r.w).unwrap_or(i32::MAX));
            let bottom = r.y.saturating_add(i32::try_from(r.h).unwrap_or(i32::MAX));
            qxl::Rect::new(r.x, r.y, right, bottom)
        }));
    }
}

/// Types and points on the current VM's i8042 for the SPICE inputs channel. The lock is held
/// only to queue bytes in the i8042 model, never across I/O.
struct SpiceInput(Arc<Mutex<Option<InputHandle>>>);

impl SpiceInput {
    fn with(&self, f: impl FnOnce(&InputHandle)) {
        if let Some(input) = lock(&self.0).as_ref() {
            f(input);
        }
    }
}

impl InputSink for SpiceInput {
    fn key_down(&mut self, scancode: u32) {
        self.with(|input| input.key_packed(scancode));
    }

    fn key_up(&mut self, scancode: u32) {
        self.with(|input| input.key_packed(scancode));
    }

    fn mouse_motion(&mut self, dx: i32, dy: i32, buttons: u32) {
        self.with(|input| input.mouse_motion(dx, dy, buttons));
    }

    fn mouse_button(&mut self, button: u32, pressed: bool, buttons: u32) {
        let button = match button {
            1 => MouseButton::Left,
            2 => MouseButton::Middle,
            3 => MouseButton::Right,
            4 => MouseButton::WheelUp,
            5 => MouseButton::WheelDown,
            // Side and extra buttons: the emulated IntelliMouse has none.
            _ => return,
        };
        self.with(|input| input.mouse_button(button, pressed, buttons));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_first_line() {
        let dir = std::env::temp_dir().join(format!("vmm-spice-pw-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");

        fs::write(&file, "s3cret\nignored\n").unwrap();
        assert_eq!(read_password(&file).unwrap(), "s3cret");
        fs::write(&file, "\n").unwrap();
        assert!(matches!(
            read_password(&file),
            Err(SpiceStartError::EmptyPassword(_))
        ));
        let missing = dir.join("missing");
        assert!(matches!(
            read_password(&missing),
            Err(SpiceStartError::PasswordFile(..))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rectangles_convert_both_ways() {
        let qxl_rect = qxl::Rect::new(3, 4, 13, 24);
        let spice_rect = spice_rect(qxl_rect);
        assert_eq!(
            (spice_rect.x, spice_rect.y, spice_rect.w, spice_rect.h),
            (3, 4, 10, 20)
        );
    }
}
