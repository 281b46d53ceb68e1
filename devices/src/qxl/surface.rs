// SPDX-License-Identifier: Apache-2.0
//! Surfaces: the primary (id 0, from CREATE_PRIMARY) and off-screen surfaces (from
//! QXL_CMD_SURFACE), rendered in place in guest memory as spice-server does.
//!
//! Only 32-bit formats (32_xRGB, 32_ARGB) are rendered. A negative stride means the memory
//! holds the bottom row first; rows are always addressed top-down here.

use super::error::QxlGuestError;
use super::memory::{GuestBars, GuestPtr};
use super::rect::Rect;
use super::regs::{SPICE_SURFACE_FMT_32_ARGB, SPICE_SURFACE_FMT_32_XRGB};
use super::release::ReleaseToken;

/// Largest surface width or height accepted.
pub const MAX_SURFACE_DIM: u32 = 8192;

/// The geometry of a surface as the guest described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SurfaceInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes from one row to the next in memory; negative when bottom-up.
    pub stride: i32,
    /// SPICE_SURFACE_FMT_*.
    pub format: u32,
}

impl SurfaceInfo {
    /// Checks format and geometry and returns the bytes of memory the surface spans.
    /// `max_bytes` caps that size (the primary must fit the surface0 area, as in QEMU).
    pub fn validate(&self, max_bytes: u64) -> Result<u64, QxlGuestError> {
        if !matches!(
            self.format,
            SPICE_SURFACE_FMT_32_XRGB | SPICE_SURFACE_FMT_32_ARGB
        ) {
            return Err(QxlGuestError::UnsupportedFormat(self.format));
        }

        let bad = QxlGuestError::BadSurface {
            width: self.width,
            height: self.height,
            stride: self.stride,
        };
        let dims_ok = (1..=MAX_SURFACE_DIM).contains(&self.width)
            && (1..=MAX_SURFACE_DIM).contains(&self.height);
        let abs_stride = u64::from(self.stride.unsigned_abs());
        if !dims_ok || abs_stride < u64::from(self.width) * 4 || abs_stride % 4 != 0 {
            return Err(bad);
        }

        let bytes = abs_stride * u64::from(self.height);
        if bytes > max_bytes {
            return Err(bad);
        }
        Ok(bytes)
    }

    /// The whole surface as a rectangle.
    pub fn bounds(&self) -> Rect {
        // Both dimensions are at most MAX_SURFACE_DIM once validated.
        let w = i32::try_from(self.width).unwrap_or(i32::MAX);
        let h = i32::try_from(self.height).unwrap_or(i32::MAX);
        Rect::new(0, 0, w, h)
    }
}

/// A live surface: its geometry and where its rows are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surface {
    /// Geometry and format.
    pub info: SurfaceInfo,
    /// Start of the surface memory (lowest address).
    mem: GuestPtr,
    /// Offset of the top row from `mem`.
    top: u64,
    /// The QXL_CMD_SURFACE CREATE command, held until the surface is destroyed.
    create: Option<ReleaseToken>,
}

impl Surface {
    /// Creates a surface over the checked memory `mem` (`info.validate` bytes long).
    pub fn new(info: SurfaceInfo, mem: GuestPtr, create: Option<ReleaseToken>) -> Self {
        let abs_stride = u64::from(info.stride.unsigned_abs());
        let top = if info.stride < 0 {
            abs_stride * u64::from(info.height - 1)
        } else {
            0
        };
        Surface {
            info,
            mem,
            top,
            create,
        }
    }

    /// The whole surface as a rectangle.
    pub fn bounds(&self) -> Rect {
        self.info.bounds()
    }

    /// Returns whether 32_ARGB (alpha is meaningful).
    pub fn has_alpha(&self) -> bool {
        self.info.format == SPICE_SURFACE_FMT_32_ARGB
    }

    /// Pointer to pixel `(x, y)`; the caller keeps both inside the surface.
    pub fn pixel_ptr(&self, x: u32, y: u32) -> GuestPtr {
        let abs_stride = u64::from(self.info.stride.unsigned_abs());
        let row = u64::from(y) * abs_stride;
        let row = if self.info.stride < 0 {
            self.top.saturating_sub(row)
        } else {
            self.top + row
        };
        GuestPtr::new(self.mem.bar, self.mem.offset + row + u64::from(x) * 4)
    }

    /// Fills the surface memory with zeros (creation without KEEP_DATA).
    pub fn clear(&self, bars: &GuestBars) -> Result<(), QxlGuestError> {
        let bytes = u64::from(self.info.stride.unsigned_abs()) * u64::from(self.info.height);
        bars.fill(self.mem, bytes, 0)
    }
}

/// What a surface id currently stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Slot {
    #[default]
    Free,
    Live(Surface),
    /// A CREATE the engine refused (unsupported format, bad geometry). Its command stays
    /// unreleased until the guest destroys the id, because Linux reads the CREATE buffer when
    /// it builds the DESTROY.
    Refused(ReleaseToken),
}

/// The surface table, indexed by surface id.
#[derive(Debug)]
pub struct Surfaces {
    slots: Vec<Slot>,
}

impl Surfaces {
    /// Creates a table of `n` free ids.
    pub fn new(n: u32) -> Self {
        Surfaces {
            slots: vec![Slot::Free; n as usize],
        }
    }

    fn index(&self, id: u32) -> Result<usize, QxlGuestError> {
        let index = id as usize;
        if index >= self.slots.len() {
            return Err(QxlGuestError::SurfaceIdOutOfRange(id));
        }
        Ok(index)
    }

    /// Returns live surface `id`.
    pub fn get(&self, id: u32) -> Result<&Surface, QxlGuestError> {
        match &self.slots[self.index(id)?] {
            Slot::Live(surface) => Ok(surface),
            _ => Err(QxlGuestError::UnknownSurface(id)),
        }
    }

    /// Returns whether anything (a live or a refused surface) holds `id`.
    pub fn is_used(&self, id: u32) -> Result<bool, QxlGuestError> {
        Ok(self.slots[self.index(id)?] != Slot::Free)
    }

    /// Installs `surface` at the free id `id`.
    pub fn insert(&mut self, id: u32, surface: Surface) -> Result<(), QxlGuestError> {
        self.put(id, Slot::Live(surface))
    }

    /// Marks `id` as held by a refused CREATE.
    pub fn insert_refused(&mut self, id: u32, create: ReleaseToken) -> Result<(), QxlGuestError> {
        self.put(id, Slot::Refused(create))
    }

    fn put(&mut self, id: u32, slot: Slot) -> Result<(), QxlGuestError> {
        let index = self.index(id)?;
        if self.slots[index] != Slot::Free {
            return Err(QxlGuestError::SurfaceExists(id));
        }
        self.slots[index] = slot;
        Ok(())
    }

    /// Frees `id` and returns the CREATE command it held, if any.
    pub fn remove(&mut self, id: u32) -> Result<Option<ReleaseToken>, QxlGuestError> {
        let index = self.index(id)?;
        match std::mem::take(&mut self.slots[index]) {
            Slot::Free => Err(QxlGuestError::UnknownSurface(id)),
            Slot::Live(surface) => Ok(surface.create),
            Slot::Refused(token) => Ok(Some(token)),
        }
    }

    /// Frees every id and returns the CREATE commands they held.
    pub fn clear(&mut self) -> Vec<ReleaseToken> {
        let mut held = Vec::new();
        for slot in &mut self.slots {
            match std::mem::take(slot) {
                Slot::Live(s) => held.extend(s.create),
                Slot::Refused(token) => held.push(token),
                Slot::Free => {}
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qxl::memory::Bar;

    fn info(width: u32, height: u32, stride: i32) -> SurfaceInfo {
        SurfaceInfo {
            width,
            height,
            stride,
            format: SPICE_SURFACE_FMT_32_XRGB,
        }
    }

    #[test]
    fn geometry_checks() {
        assert_eq!(info(1024, 768, 4096).validate(16 << 20), Ok(3 << 20));
        assert_eq!(info(1024, 768, -4096).validate(16 << 20), Ok(3 << 20));
        assert_eq!(info(10, 10, 48).validate(480), Ok(480));

        for bad in [
            info(0, 10, 40),
            info(10, 0, 40),
            info(8193, 1, 8193 * 4),
            info(10, 10, 36),
            info(10, 10, -36),
            info(10, 10, 42),
            info(3840, 2160, 3840 * 4),
            info(10, 10, i32::MIN),
        ] {
            assert!(
                matches!(
                    bad.validate(16 << 20),
                    Err(QxlGuestError::BadSurface { .. })
                ),
                "{bad:?}"
            );
        }

        let mut f16 = info(10, 10, 20);
        f16.format = 80;
        assert_eq!(
            f16.validate(1 << 20),
            Err(QxlGuestError::UnsupportedFormat(80))
        );
    }

    #[test]
    fn rows_are_addressed_top_down() {
        let mem = GuestPtr::new(Bar::Vram, 0x1000);
        let up = Surface::new(info(4, 3, 32), mem, None);
        assert_eq!(
            up.pixel_ptr(1, 2),
            GuestPtr::new(Bar::Vram, 0x1000 + 64 + 4)
        );

        let down = Surface::new(info(4, 3, -32), mem, None);
        assert_eq!(down.pixel_ptr(0, 0), GuestPtr::new(Bar::Vram, 0x1000 + 64));
        assert_eq!(down.pixel_ptr(3, 2), GuestPtr::new(Bar::Vram, 0x1000 + 12));
    }

    #[test]
    fn table_tracks_ids_and_held_creates() {
        let mut table = Surfaces::new(4);
        let token = ReleaseToken {
            info: GuestPtr::new(Bar::Ram, 8),
            id: 5,
        };
        let s = Surface::new(info(1, 1, 4), GuestPtr::new(Bar::Vram, 0), Some(token));

        table.insert(1, s.clone()).unwrap();
        assert_eq!(
            table.insert(1, s.clone()),
            Err(QxlGuestError::SurfaceExists(1))
        );
        assert_eq!(table.get(4), Err(QxlGuestError::SurfaceIdOutOfRange(4)));
        assert_eq!(table.get(2), Err(QxlGuestError::UnknownSurface(2)));
        table.insert_refused(2, token).unwrap();
        assert_eq!(table.get(2), Err(QxlGuestError::UnknownSurface(2)));
        assert!(table.is_used(2).unwrap());

        assert_eq!(table.remove(1), Ok(Some(token)));
        assert_eq!(table.remove(1), Err(QxlGuestError::UnknownSurface(1)));
        table.insert(3, s).unwrap();
        assert_eq!(table.clear(), [token, token]);
        assert!(!table.is_used(3).unwrap());
    }
}
