// SPDX-License-Identifier: Apache-2.0
//! The guest's head layout (QXLMonitorsConfig), sent with QXL_IO_MONITORS_CONFIG_ASYNC.

use super::error::QxlGuestError;
use super::memory::{le_u16, le_u32, GuestBars};
use super::memslot::MemSlots;
use super::surface::SurfaceInfo;

/// Most heads the protocol carries.
pub const MAX_MONITORS: u16 = 64;
/// Largest head size or position accepted (the Linux driver's own limit).
pub const MAX_HEAD_VALUE: u32 = 8192;
/// Bytes of a QXLHead.
const HEAD_LEN: usize = 28;
const HEAD_SIZE: u64 = HEAD_LEN as u64;

/// One head: a rectangle of a surface shown on one monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorHead {
    /// Head id.
    pub id: u32,
    /// Surface shown (always 0 with Linux).
    pub surface_id: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Left edge inside the surface.
    pub x: u32,
    /// Top edge inside the surface.
    pub y: u32,
    /// Head flags.
    pub flags: u32,
}

impl MonitorHead {
    fn parse(b: &[u8]) -> Self {
        MonitorHead {
            id: le_u32(b, 0),
            surface_id: le_u32(b, 4),
            width: le_u32(b, 8),
            height: le_u32(b, 12),
            x: le_u32(b, 16),
            y: le_u32(b, 20),
            flags: le_u32(b, 24),
        }
    }

    /// A head covering all of `primary`.
    pub fn whole(primary: &SurfaceInfo) -> Self {
        MonitorHead {
            id: 0,
            surface_id: 0,
            width: primary.width,
            height: primary.height,
            x: 0,
            y: 0,
            flags: 0,
        }
    }

    fn is_sane(&self) -> bool {
        [self.width, self.height, self.x, self.y]
            .iter()
            .all(|&v| v <= MAX_HEAD_VALUE)
    }
}

/// The head layout after the engine's checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorsConfig {
    /// `max_allowed` as the guest wrote it.
    pub max_allowed: u16,
    /// The accepted heads; never empty while a primary surface exists.
    pub heads: Vec<MonitorHead>,
    /// Heads dropped: beyond the limit, or with a value above [`MAX_HEAD_VALUE`].
    pub dropped: u32,
}

/// Reads the QXLMonitorsConfig at `addr`. The count is clamped to `max_allowed` and to
/// `limit` (at most [`MAX_MONITORS`]); heads with a size or position above
/// [`MAX_HEAD_VALUE`] are dropped; when no head is left, one head covering `primary` stands
/// in.
pub fn read_monitors_config(
    bars: &GuestBars,
    slots: &MemSlots,
    addr: u64,
    limit: u16,
    primary: Option<SurfaceInfo>,
) -> Result<MonitorsConfig, QxlGuestError> {
    if addr == 0 {
        return Err(QxlGuestError::NullAddress("monitors config"));
    }
    let mut header = [0u8; 4];
    bars.read(slots.translate(addr, 4)?, &mut header)?;
    let (count, max_allowed) = (le_u16(&header, 0), le_u16(&header, 2));

    let n = count.min(max_allowed).min(limit.min(MAX_MONITORS));
    let ptr = slots.translate(addr, 4 + HEAD_SIZE * u64::from(n))?;
    let mut bytes = vec![0u8; usize::from(n) * HEAD_LEN];
    bars.read(
        ptr.add(4).ok_or(QxlGuestError::BadMonitorsConfig(addr))?,
        &mut bytes,
    )?;

    let parsed = bytes.chunks_exact(HEAD_LEN).map(MonitorHead::parse);
    let mut heads: Vec<MonitorHead> = parsed.filter(MonitorHead::is_sane).collect();
    let dropped = u32::from(count) - u32::try_from(heads.len()).unwrap_or(0);
    if heads.is_empty() {
        heads.extend(primary.as_ref().map(MonitorHead::whole));
    }

    Ok(MonitorsConfig {
        max_allowed,
        heads,
        dropped,
    })
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::qxl::memory::{Bar, GuestPtr};
    use crate::qxl::regs::SPICE_SURFACE_FMT_32_XRGB;

    const BASE: u64 = 0x8000_0000;
    const PRIMARY: SurfaceInfo = SurfaceInfo {
        width: 1600,
        height: 900,
        stride: 6400,
        format: SPICE_SURFACE_FMT_32_XRGB,
    };

    fn setup() -> (GuestBars, MemSlots) {
        crate::qxl::testutil::ram_slot(BASE, 1 << 16, 1 << 16)
    }

    /// Writes a config with `count`/`max_allowed` and heads of 640x480 at x = 640 * i.
    fn write(bars: &GuestBars, slots: &MemSlots, count: u16, max: u16, heads: u16) -> u64 {
        let mut b = Vec::new();
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&max.to_le_bytes());
        for i in 0..u32::from(heads) {
            for v in [i, 0, 640, 480, 640 * (i % 8), 0, 0] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        bars.write(GuestPtr::new(Bar::Ram, 0x100), &b).unwrap();
        slots.address(1, 0x100)
    }

    #[test]
    fn linux_layout_is_read() {
        let (bars, slots) = setup();
        let addr = write(&bars, &slots, 2, 4, 2);

        let config = read_monitors_config(&bars, &slots, addr, 64, Some(PRIMARY)).unwrap();
        assert_eq!(config.max_allowed, 4);
        assert_eq!(config.heads.len(), 2);
        assert_eq!(config.heads[1].x, 640);
        assert_eq!(config.dropped, 0);
    }

    #[test]
    fn count_zero_means_the_primary() {
        let (bars, slots) = setup();
        let addr = write(&bars, &slots, 0, 4, 0);

        let config = read_monitors_config(&bars, &slots, addr, 64, Some(PRIMARY)).unwrap();
        assert_eq!(config.heads, [MonitorHead::whole(&PRIMARY)]);
        assert_eq!((config.heads[0].width, config.heads[0].height), (1600, 900));

        let config = read_monitors_config(&bars, &slots, addr, 64, None).unwrap();
        assert!(config.heads.is_empty());
    }

    #[test]
    fn counts_are_clamped() {
        let (bars, slots) = setup();
        let addr = write(&bars, &slots, 65, 1, 2);
        let config = read_monitors_config(&bars, &slots, addr, 64, Some(PRIMARY)).unwrap();
        assert_eq!(config.heads.len(), 1);
        assert_eq!(config.heads[0].width, 640);
        assert_eq!(config.dropped, 64);

        let addr = write(&bars, &slots, 65, 65, 65);
        let config = read_monitors_config(&bars, &slots, addr, 64, Some(PRIMARY)).unwrap();
        assert_eq!(config.heads.len(), 64);
        let config = read_monitors_config(&bars, &slots, addr, 2, Some(PRIMARY)).unwrap();
        assert_eq!(config.heads.len(), 2);
    }

    #[test]
    fn insane_heads_are_dropped() {
        let (bars, slots) = setup();
        let addr = write(&bars, &slots, 1, 4, 1);
        bars.write_u32(GuestPtr::new(Bar::Ram, 0x100 + 4 + 8), 8193)
            .unwrap();

        let config = read_monitors_config(&bars, &slots, addr, 64, Some(PRIMARY)).unwrap();
        assert_eq!(config.heads, [MonitorHead::whole(&PRIMARY)]);
        assert_eq!(config.dropped, 1);
        assert!(read_monitors_config(&bars, &slots, 0, 64, None).is_err());
        let outside = slots.address(1, (1 << 16) - 2);
        assert!(read_monitors_config(&bars, &slots, outside, 64, None).is_err());
    }
}
