// SPDX-License-Identifier: Apache-2.0
//! The display channel's state: surfaces, the image cache and the MARK flag, changed by one
//! server message at a time. Draw operations a framebuffer server and QEMU's VGA-mode QXL
//! send are implemented (fills, copies, copy-bits, blackness, whiteness, invert); the other
//! draw messages are reported as unsupported rather than skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::canvas::{Clip, Pixmap, Rect};
use super::image::{self, Image, FLAG_CACHE_ME};
use super::wire::Bytes;
use super::ClientError;

/// Display message numbers (SPICE_MSG_DISPLAY_*).
pub mod msg {
    /// Legacy mode message, ignored.
    pub const MODE: u16 = 101;
    /// The initial image is complete: the screen may be shown.
    pub const MARK: u16 = 102;
    /// Clear the primary surface and drop the mark.
    pub const RESET: u16 = 103;
    /// Copy an area of a surface to another place of it.
    pub const COPY_BITS: u16 = 104;
    /// Remove images from the cache.
    pub const INVAL_LIST: u16 = 105;
    /// Clear the image cache.
    pub const INVAL_ALL_PIXMAPS: u16 = 106;
    /// Remove a palette from the palette cache (this client keeps none).
    pub const INVAL_PALETTE: u16 = 107;
    /// Clear the palette cache (this client keeps none).
    pub const INVAL_ALL_PALETTES: u16 = 108;
    /// Video stream messages: clip, destroy, destroy all (no stream is ever created here).
    pub const STREAM_CLIP: u16 = 124;
    /// See STREAM_CLIP.
    pub const STREAM_DESTROY: u16 = 125;
    /// See STREAM_CLIP.
    pub const STREAM_DESTROY_ALL: u16 = 126;
    /// Fill with a brush.
    pub const DRAW_FILL: u16 = 302;
    /// Copy an image.
    pub const DRAW_COPY: u16 = 304;
    /// Fill with black.
    pub const DRAW_BLACKNESS: u16 = 306;
    /// Fill with white.
    pub const DRAW_WHITENESS: u16 = 307;
    /// Invert.
    pub const DRAW_INVERS: u16 = 308;
    /// Create a surface.
    pub const SURFACE_CREATE: u16 = 314;
    /// Destroy a surface.
    pub const SURFACE_DESTROY: u16 = 315;
    /// Monitor layout; only sent to clients with the MONITORS_CONFIG cap, ignored.
    pub const MONITORS_CONFIG: u16 = 317;
    /// Stream reports; only after a stream exists, ignored.
    pub const STREAM_ACTIVATE_REPORT: u16 = 319;
}

/// Client message SPICE_MSGC_DISPLAY_INIT: cache sizes, sent right after the link.
pub const DISPLAY_INIT: u16 = 101;
/// Client message SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION: u8 SPICE_IMAGE_COMPRESSION_*.
pub const PREFERRED_COMPRESSION: u16 = 103;

/// SPICE_SURFACE_FMT_32_xRGB.
const SURFACE_FMT_32_XRGB: u32 = 32;
/// SPICE_SURFACE_FMT_32_ARGB.
const SURFACE_FMT_32_ARGB: u32 = 96;
/// SPICE_SURFACE_FLAGS_PRIMARY.
const SURFACE_FLAG_PRIMARY: u32 = 1;
/// SPICE_ROPD_OP_PUT: plain copy.
const ROPD_OP_PUT: u16 = 8;
/// SPICE_BRUSH_TYPE_SOLID.
const BRUSH_SOLID: u8 = 1;
/// SPICE_CLIP_TYPE_RECTS.
const CLIP_RECTS: u8 = 1;
/// Size of a Rect on the wire.
const RECT_SIZE: usize = 16;

/// Image cache size this client announces in DISPLAY_INIT, in pixels (spice-gtk's 80 MiB).
pub const PIXMAP_CACHE_PIXELS: u64 = 20 << 20;
/// All surfaces together may hold at most this many pixels (256 MiB).
pub const MAX_SURFACE_PIXELS: u64 = 64 << 20;

/// Most records a draw log keeps (see [`DrawLog`]).
pub const MAX_DRAW_LOG: usize = 100_000;

/// One DRAW_COPY image as the client received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrawRecord {
    /// The host's TSC when the display channel began applying the message (set with
    /// [`DrawLog::set_arrival`]).
    pub received_tsc: u64,
    /// The left and top of the destination box.
    pub dest: (i32, i32),
    /// The first pixels of the image's top row as decoded (0 past its right edge).
    pub pixels: [u32; 4],
}

/// An opt-in, bounded log of DRAW_COPY images, for benchmarks whose guest stamps the time
/// into the pixels it draws: off unless asked for, and never more than its capacity.
#[derive(Debug, Default)]
pub struct DrawLog {
    capacity: usize,
    records: Vec<DrawRecord>,
    dropped: u64,
    arrival: u64,
}

impl DrawLog {
    /// A log that keeps at most `capacity` records (at most [`MAX_DRAW_LOG`]).
    pub fn new(capacity: usize) -> Self {
        DrawLog {
            capacity: capacity.min(MAX_DRAW_LOG),
            ..DrawLog::default()
        }
    }

    /// Sets the arrival time of the message about to be applied.
    pub fn set_arrival(&mut self, tsc: u64) {
        self.arrival = tsc;
    }

    /// Takes the records so far and how many did not fit, leaving the log empty.
    pub fn take(&mut self) -> (Vec<DrawRecord>, u64) {
        let records = std::mem::take(&mut self.records);
        (records, std::mem::take(&mut self.dropped))
    }

    fn record(&mut self, dest: &Rect, image: &Pixmap) {
        if self.records.len() >= self.capacity {
            self.dropped += 1;
            return;
        }
        let mut pixels = [0; 4];
        let row = image.pixels.iter().take(image.width as usize);
        for (slot, pixel) in pixels.iter_mut().zip(row) {
            *slot = *pixel;
        }
        self.records.push(DrawRecord {
            received_tsc: self.arrival,
            dest: (dest.left, dest.top),
            pixels,
        });
    }
}

/// A client surface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Surface {
    /// Its pixels.
    pub pixmap: Pixmap,
    /// SPICE_SURFACE_FMT_* (32_xRGB or 32_ARGB).
    pub format: u32,
    /// Whether it is the displayed surface.
    pub primary: bool,
}

impl Surface {
    /// Alpha bits to clear in pixels written to this surface.
    fn alpha_mask(&self) -> u32 {
        if self.format == SURFACE_FMT_32_XRGB {
            0xff00_0000
        } else {
            0
        }
    }
}

/// Everything the display channel has built.
#[derive(Debug, Default)]
pub struct Display {
    surfaces: HashMap<u32, Surface>,
    cache: HashMap<u64, Arc<Pixmap>>,
    cache_pixels: u64,
    /// Whether MARK arrived since the primary surface was created or reset.
    pub mark: bool,
    /// How many images of each SPICE_IMAGE_TYPE_* were drawn.
    pub image_kinds: BTreeMap<u8, u64>,
    /// The DRAW_COPY images received, when a benchmark asked for them.
    pub draw_log: Option<DrawLog>,
}

/// The common start of draw messages: surface, destination box and clip.
struct DisplayBase {
    surface_id: u32,
    area: Rect,
    clip: Clip,
}

impl Display {
    /// The primary surface, if one exists.
    pub fn primary(&self) -> Option<&Surface> {
        self.surfaces.values().find(|s| s.primary)
    }

    /// Applies one server message of the display channel.
    pub fn handle(&mut self, kind: u16, body: &[u8]) -> Result<(), ClientError> {
        let mut bytes = Bytes::new(body, "display message");
        match kind {
            msg::SURFACE_CREATE => self.surface_create(&mut bytes),
            msg::SURFACE_DESTROY => self.surface_destroy(bytes.u32()?),
            msg::MARK => {
                self.mark = self.primary().is_some();
                Ok(())
            }
            msg::RESET => self.reset(),
            msg::DRAW_FILL => self.draw_fill(&mut bytes),
            msg::DRAW_COPY => self.draw_copy(body, &mut bytes),
            msg::COPY_BITS => self.copy_bits(&mut bytes),
            msg::DRAW_BLACKNESS => self.draw_constant(&mut bytes, |_| 0),
            msg::DRAW_WHITENESS => self.draw_constant(&mut bytes, |_| 0x00ff_ffff),
            msg::DRAW_INVERS => self.draw_constant(&mut bytes, |p| p ^ 0x00ff_ffff),
            msg::INVAL_LIST => self.inval_list(&mut bytes),
            msg::INVAL_ALL_PIXMAPS => {
                self.cache.clear();
                self.cache_pixels = 0;
                Ok(())
            }
            msg::MODE
            | msg::INVAL_PALETTE
            | msg::INVAL_ALL_PALETTES
            | msg::STREAM_CLIP
            | msg::STREAM_DESTROY
            | msg::STREAM_DESTROY_ALL
            | msg::MONITORS_CONFIG
            | msg::STREAM_ACTIVATE_REPORT => Ok(()),
            other => Err(ClientError::Unsupported(format!(
                "display message {other} ({})",
                message_name(other)
            ))),
        }
    }

    /// SURFACE_CREATE: u32 id, width, height, format, flags.
    fn surface_create(&mut self, bytes: &mut Bytes) -> Result<(), ClientError> {
        let id = bytes.u32()?;
        let width = bytes.u32()?;
        let height = bytes.u32()?;
        let format = bytes.u32()?;
        let primary = bytes.u32()? & SURFACE_FLAG_PRIMARY != 0;
        if format != SURFACE_FMT_32_XRGB && format != SURFACE_FMT_32_ARGB {
            return Err(ClientError::Unsupported(format!("surface format {format}")));
        }

        let others: u64 = self
            .surfaces
            .iter()
            .filter(|(&other, _)| other != id)
            .map(|(_, s)| u64::from(s.pixmap.width) * u64::from(s.pixmap.height))
            .sum();
        if others + u64::from(width) * u64::from(height) > MAX_SURFACE_PIXELS {
            return Err(ClientError::Protocol(format!(
                "surface {id} of {width}x{height} pixels goes over the \
                 {MAX_SURFACE_PIXELS}-pixel limit for all surfaces"
            )));
        }

        if primary {
            self.surfaces.retain(|_, s| !s.primary);
            self.mark = false;
        }
        let pixmap = Pixmap::new(width, height);
        let surface = Surface {
            pixmap,
            format,
            primary,
        };
        self.surfaces.insert(id, surface);
        Ok(())
    }

    fn surface_destroy(&mut self, id: u32) -> Result<(), ClientError> {
        let surface = self.surfaces.remove(&id).ok_or_else(|| {
            ClientError::Protocol(format!("SURFACE_DESTROY of unknown surface {id}"))
        })?;
        if surface.primary {
            self.mark = false;
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), ClientError> {
        if let Some(primary) = self.surfaces.values_mut().find(|s| s.primary) {
            primary.pixmap.pixels.fill(0);
        }
        self.mark = false;
        Ok(())
    }

    fn surface_mut(&mut self, id: u32) -> Result<&mut Surface, ClientError> {
        self.surfaces
            .get_mut(&id)
            .ok_or_else(|| ClientError::Protocol(format!("draw to unknown surface {id}")))
    }

    /// DRAW_FILL: base, brush, u16 rop, mask. Only a solid brush with a plain copy.
    fn draw_fill(&mut self, bytes: &mut Bytes) -> Result<(), ClientError> {
        let base = parse_base(bytes)?;
        let brush = bytes.u8()?;
        if brush != BRUSH_SOLID {
            return Err(ClientError::Unsupported(format!(
                "DRAW_FILL with brush type {brush}"
            )));
        }
        let color = bytes.u32()?;
        let rop = bytes.u16()?;
        parse_mask(bytes)?;
        if rop != ROPD_OP_PUT {
            return Err(ClientError::Unsupported(format!(
                "DRAW_FILL with rop {rop:#x}"
            )));
        }

        let surface = self.surface_mut(base.surface_id)?;
        let color = color & !surface.alpha_mask();
        surface.pixmap.apply(&base.area, &base.clip, |_| color);
        Ok(())
    }

    /// DRAW_BLACKNESS, DRAW_WHITENESS, DRAW_INVERS: base and mask.
    fn draw_constant(&mut self, bytes: &mut Bytes, op: fn(u32) -> u32) -> Result<(), ClientError> {
        let base = parse_base(bytes)?;
        parse_mask(bytes)?;

        let surface = self.surface_mut(base.surface_id)?;
        surface.pixmap.apply(&base.area, &base.clip, op);
        Ok(())
    }

    /// DRAW_COPY: base, u32 image pointer, Rect src_area, u16 rop, u8 scale mode, mask.
    fn draw_copy(&mut self, body: &[u8], bytes: &mut Bytes) -> Result<(), ClientError> {
        let base = parse_base(bytes)?;
        let image_offset = bytes.u32()?;
        let src_area = parse_rect(bytes)?;
        let rop = bytes.u16()?;
        let _scale_mode = bytes.u8()?;
        parse_mask(bytes)?;
        if rop != ROPD_OP_PUT {
            return Err(ClientError::Unsupported(format!(
                "DRAW_COPY with rop {rop:#x}"
            )));
        }
        if image_offset == 0 {
            return Err(ClientError::Protocol("DRAW_COPY without an image".into()));
        }
        if src_area.width() != base.area.width() || src_area.height() != base.area.height() {
            return Err(ClientError::Unsupported(format!(
                "scaled DRAW_COPY from {src_area:?} to {:?}",
                base.area
            )));
        }

        let src = self.image_source(body, image_offset)?;
        check_inside(&src_area, &src, "DRAW_COPY source area")?;
        if let Some(log) = &mut self.draw_log {
            log.record(&base.area, &src);
        }
        let surface = self.surface_mut(base.surface_id)?;
        let mask = surface.alpha_mask();
        let origin = (src_area.left, src_area.top);
        surface
            .pixmap
            .copy_from(&base.area, &base.clip, &src, origin, mask);
        Ok(())
    }

    /// Decodes the image at `offset`, resolving cache and surface references, and caches it
    /// when asked to.
    fn image_source(&mut self, body: &[u8], offset: u32) -> Result<Arc<Pixmap>, ClientError> {
        let (desc, image) = image::parse_image(body, offset)?;
        *self.image_kinds.entry(desc.kind).or_default() += 1;
        let pixmap = match image {
            Image::Pixels(pixmap) => Arc::new(pixmap),
            Image::FromCache(id) => self.cache.get(&id).cloned().ok_or_else(|| {
                ClientError::Protocol(format!("image {id:#x} is not in the cache"))
            })?,
            Image::Surface(id) => match self.surfaces.get(&id) {
                Some(surface) => Arc::new(surface.pixmap.clone()),
                None => {
                    return Err(ClientError::Protocol(format!(
                        "image of unknown surface {id}"
                    )))
                }
            },
        };

        if desc.flags & FLAG_CACHE_ME != 0 {
            self.cache_insert(desc.id, pixmap.clone())?;
        }
        Ok(pixmap)
    }

    fn cache_insert(&mut self, id: u64, pixmap: Arc<Pixmap>) -> Result<(), ClientError> {
        let cost = u64::from(pixmap.width) * u64::from(pixmap.height);
        if let Some(old) = self.cache.remove(&id) {
            self.cache_pixels -= u64::from(old.width) * u64::from(old.height);
        }
        if self.cache_pixels + cost > PIXMAP_CACHE_PIXELS {
            return Err(ClientError::Protocol(format!(
                "caching image {id:#x} overfills the {PIXMAP_CACHE_PIXELS}-pixel image cache"
            )));
        }
        self.cache_pixels += cost;
        self.cache.insert(id, pixmap);
        Ok(())
    }

    /// COPY_BITS: base, then Point src_pos: copy box-sized pixels from src_pos to the box.
    fn copy_bits(&mut self, bytes: &mut Bytes) -> Result<(), ClientError> {
        let base = parse_base(bytes)?;
        let (x, y) = (bytes.i32()?, bytes.i32()?);
        let surface = self.surface_mut(base.surface_id)?;
        let width = i32::try_from(base.area.width()).unwrap_or(i32::MAX);
        let height = i32::try_from(base.area.height()).unwrap_or(i32::MAX);
        check_inside(
            &Rect::new(x, y, width, height),
            &surface.pixmap,
            "COPY_BITS source",
        )?;

        // The source and destination may overlap: copy from a snapshot.
        let snapshot = surface.pixmap.clone();
        let mask = surface.alpha_mask();
        surface
            .pixmap
            .copy_from(&base.area, &base.clip, &snapshot, (x, y), mask);
        Ok(())
    }

    /// INVAL_LIST: u16 count, then count x {u8 type, u64 id}.
    fn inval_list(&mut self, bytes: &mut Bytes) -> Result<(), ClientError> {
        let count = bytes.u16()?;
        for _ in 0..count {
            let _kind = bytes.u8()?;
            let id = bytes.u64()?;
            if let Some(old) = self.cache.remove(&id) {
                self.cache_pixels -= u64::from(old.width) * u64::from(old.height);
            }
        }
        Ok(())
    }
}

/// Fails unless `area` lies inside `pixmap`.
fn check_inside(area: &Rect, pixmap: &Pixmap, what: &str) -> Result<(), ClientError> {
    if area.intersect(&pixmap.bounds()) != *area || area.is_empty() {
        return Err(ClientError::Protocol(format!(
            "{what} {area:?} is not inside the {}x{} source",
            pixmap.width, pixmap.height
        )));
    }
    Ok(())
}

fn parse_rect(bytes: &mut Bytes) -> Result<Rect, ClientError> {
    Ok(Rect {
        top: bytes.i32()?,
        left: bytes.i32()?,
        bottom: bytes.i32()?,
        right: bytes.i32()?,
    })
}

/// DisplayBase: u32 surface id, Rect box, Clip (u8 type; RECTS: u32 n, n Rects).
fn parse_base(bytes: &mut Bytes) -> Result<DisplayBase, ClientError> {
    let surface_id = bytes.u32()?;
    let area = parse_rect(bytes)?;
    let clip = match bytes.u8()? {
        CLIP_RECTS => {
            let count = usize::try_from(bytes.u32()?).unwrap_or(usize::MAX);
            if count > bytes.remaining() / RECT_SIZE {
                return Err(ClientError::Protocol(format!(
                    "clip of {count} rects in {} bytes",
                    bytes.remaining()
                )));
            }
            Clip::Rects(
                (0..count)
                    .map(|_| parse_rect(bytes))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => Clip::None,
    };
    Ok(DisplayBase {
        surface_id,
        area,
        clip,
    })
}

/// QMask: u8 flags, Point pos, u32 image pointer. Masks are not implemented.
fn parse_mask(bytes: &mut Bytes) -> Result<(), ClientError> {
    let _flags = bytes.u8()?;
    let _pos = (bytes.i32()?, bytes.i32()?);
    if bytes.u32()? != 0 {
        return Err(ClientError::Unsupported("draw with a mask".into()));
    }
    Ok(())
}

fn message_name(kind: u16) -> &'static str {
    match kind {
        122 => "STREAM_CREATE",
        123 => "STREAM_DATA",
        303 => "DRAW_OPAQUE",
        305 => "DRAW_BLEND",
        309 => "DRAW_ROP3",
        310 => "DRAW_STROKE",
        311 => "DRAW_TEXT",
        312 => "DRAW_TRANSPARENT",
        313 => "DRAW_ALPHA_BLEND",
        316 => "STREAM_DATA_SIZED",
        318 => "DRAW_COMPOSITE",
        320 => "GL_SCANOUT_UNIX",
        321 => "GL_DRAW",
        _ => "unknown",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Little-endian encoding helpers for building server messages in tests.
    pub(crate) fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A Rect on the wire for (left, top, width, height).
    pub(crate) fn rect(left: i32, top: i32, width: i32, height: i32) -> Vec<u8> {
        [top, left, top + height, left + width]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    pub(crate) fn surface_create(id: u32, width: u32, height: u32) -> Vec<u8> {
        le(&[id, width, height, SURFACE_FMT_32_XRGB, SURFACE_FLAG_PRIMARY])
    }

    /// DRAW_FILL of `color` over (left, top, width, height), with optional clip rects.
    pub(crate) fn fill(area: (i32, i32, i32, i32), clip: &[Vec<u8>], color: u32) -> Vec<u8> {
        let mut body = le(&[0]);
        body.extend(rect(area.0, area.1, area.2, area.3));
        body.extend(clip_bytes(clip));
        body.push(BRUSH_SOLID);
        body.extend(le(&[color]));
        body.extend(ROPD_OP_PUT.to_le_bytes());
        body.extend([0; 13]);
        body
    }

    fn clip_bytes(clip: &[Vec<u8>]) -> Vec<u8> {
        if clip.is_empty() {
            return vec![0];
        }
        let mut out = vec![CLIP_RECTS];
        out.extend(le(&[u32::try_from(clip.len()).unwrap()]));
        out.extend(clip.concat());
        out
    }

    /// DRAW_COPY of a top-down 32-bit bitmap of `width` x `height` pixels to (left, top),
    /// with descriptor `flags` and `id`, and optional clip rects.
    pub(crate) fn copy(
        dest: (i32, i32),
        clip: &[Vec<u8>],
        (width, height): (u32, u32),
        pixels: &[u32],
        (id, flags): (u64, u8),
    ) -> Vec<u8> {
        let (w, h) = (
            i32::try_from(width).unwrap(),
            i32::try_from(height).unwrap(),
        );
        let mut body = le(&[0]);
        body.extend(rect(dest.0, dest.1, w, h));
        body.extend(clip_bytes(clip));
        let image_at = u32::try_from(body.len() + 4 + 16 + 2 + 1 + 13).unwrap();
        body.extend(le(&[image_at]));
        body.extend(rect(0, 0, w, h));
        body.extend(ROPD_OP_PUT.to_le_bytes());
        body.extend([0; 14]);
        body.extend(id.to_le_bytes());
        body.extend([image::kind::BITMAP, flags]);
        body.extend(le(&[width, height]));
        body.extend([image::format::THIRTY_TWO_BIT, 4]);
        body.extend(le(&[width, height, width * 4, 0]));
        body.extend(le(pixels));
        body
    }

    fn display_with_primary(width: u32, height: u32) -> Display {
        let mut display = Display::default();
        display
            .handle(msg::SURFACE_CREATE, &surface_create(0, width, height))
            .unwrap();
        display
    }

    fn pixels(display: &Display) -> &[u32] {
        &display.primary().unwrap().pixmap.pixels
    }

    #[test]
    fn documented_draw_copy_example_lands_at_its_box() {
        // Section 7.4's worked example: a 3x2 image at (left 10, top 20), 117 bytes.
        let image: Vec<u32> = (1..=6).collect();
        let body = copy((10, 20), &[], (3, 2), &image, (0, 0));
        assert_eq!(body.len(), 117);
        assert_eq!(body[21..25], [57, 0, 0, 0]);

        let mut display = display_with_primary(16, 24);
        display.handle(msg::DRAW_COPY, &body).unwrap();

        let p = pixels(&display);
        assert_eq!(p[20 * 16 + 10..20 * 16 + 13], [1, 2, 3]);
        assert_eq!(p[21 * 16 + 10..21 * 16 + 13], [4, 5, 6]);
        assert_eq!(p.iter().filter(|&&v| v != 0).count(), 6);
    }

    #[test]
    fn the_draw_log_keeps_first_pixels_up_to_its_capacity() {
        let mut display = display_with_primary(16, 4);
        display.draw_log = Some(DrawLog::new(2));
        let images: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[6, 7], &[8]];
        for (i, image) in (0u8..).zip(images) {
            let width = u32::try_from(image.len()).unwrap();
            display
                .draw_log
                .as_mut()
                .unwrap()
                .set_arrival(100 + u64::from(i));
            let body = copy((i32::from(i), 2), &[], (width, 1), image, (0, 0));
            display.handle(msg::DRAW_COPY, &body).unwrap();
        }

        let (records, dropped) = display.draw_log.as_mut().unwrap().take();
        let first = DrawRecord {
            received_tsc: 100,
            dest: (0, 2),
            pixels: [1, 2, 3, 4],
        };
        let second = DrawRecord {
            received_tsc: 101,
            dest: (1, 2),
            pixels: [6, 7, 0, 0],
        };
        assert_eq!(records, [first, second]);
        assert_eq!(dropped, 1, "the third image did not fit");
        assert_eq!(display.draw_log.as_mut().unwrap().take(), (vec![], 0));
        assert_eq!(DrawLog::new(usize::MAX).capacity, MAX_DRAW_LOG);
    }

    #[test]
    fn fill_with_and_without_clip_rects() {
        let mut display = display_with_primary(4, 2);
        display
            .handle(msg::DRAW_FILL, &fill((0, 0, 4, 2), &[], 0xff12_3456))
            .unwrap();
        assert_eq!(pixels(&display), [0x123456; 8]);

        let clip = [rect(1, 0, 1, 2), rect(3, 1, 5, 5)];
        display
            .handle(msg::DRAW_FILL, &fill((0, 0, 4, 2), &clip, 0x00ff00))
            .unwrap();
        let a = 0x123456;
        assert_eq!(pixels(&display), [a, 0xff00, a, a, a, 0xff00, a, 0xff00]);
    }

    #[test]
    fn copy_clipped_by_rects() {
        let mut display = display_with_primary(3, 1);
        let body = copy((0, 0), &[rect(2, 0, 1, 1)], (3, 1), &[7, 8, 9], (0, 0));
        display.handle(msg::DRAW_COPY, &body).unwrap();

        assert_eq!(pixels(&display), [0, 0, 9]);
    }

    #[test]
    fn cached_image_is_drawn_again_from_the_cache() {
        let mut display = display_with_primary(4, 1);
        let body = copy((0, 0), &[], (2, 1), &[5, 6], (0x77, FLAG_CACHE_ME));
        display.handle(msg::DRAW_COPY, &body).unwrap();

        // The same message turned into a FROM_CACHE reference, drawn at x = 2.
        let mut from_cache = copy((2, 0), &[], (2, 1), &[], (0x77, 0));
        from_cache[65] = image::kind::FROM_CACHE;
        from_cache.truncate(75);
        display.handle(msg::DRAW_COPY, &from_cache).unwrap();
        assert_eq!(pixels(&display), [5, 6, 5, 6]);
        let kinds = BTreeMap::from([(image::kind::BITMAP, 1), (image::kind::FROM_CACHE, 1)]);
        assert_eq!(display.image_kinds, kinds);

        let mut inval = 1u16.to_le_bytes().to_vec();
        inval.push(1);
        inval.extend(0x77u64.to_le_bytes());
        display.handle(msg::INVAL_LIST, &inval).unwrap();
        let err = display.handle(msg::DRAW_COPY, &from_cache).unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol violation: image 0x77 is not in the cache"
        );
    }

    #[test]
    fn copy_bits_scrolls_overlapping_areas() {
        let mut display = display_with_primary(1, 4);
        display
            .handle(
                msg::DRAW_COPY,
                &copy((0, 0), &[], (1, 4), &[1, 2, 3, 4], (0, 0)),
            )
            .unwrap();

        // Move rows 1..4 up by one: box (0, 0, 1, 3), source point (0, 1).
        let mut body = le(&[0]);
        body.extend(rect(0, 0, 1, 3));
        body.push(0);
        body.extend(le(&[0, 1]));
        display.handle(msg::COPY_BITS, &body).unwrap();

        assert_eq!(pixels(&display), [2, 3, 4, 4]);
    }

    #[test]
    fn blackness_whiteness_and_invert() {
        let mut display = display_with_primary(3, 1);
        let base = |left| {
            let mut body = le(&[0]);
            body.extend(rect(left, 0, 1, 1));
            body.push(0);
            body.extend([0; 13]);
            body
        };
        display.handle(msg::DRAW_WHITENESS, &base(0)).unwrap();
        display.handle(msg::DRAW_INVERS, &base(1)).unwrap();
        display.handle(msg::DRAW_WHITENESS, &base(2)).unwrap();
        display.handle(msg::DRAW_BLACKNESS, &base(2)).unwrap();

        assert_eq!(pixels(&display), [0xffffff, 0xffffff, 0]);
    }

    #[test]
    fn mark_reset_and_surface_lifetime() {
        let mut display = Display::default();
        display.handle(msg::MARK, &[]).unwrap();
        assert!(!display.mark, "MARK without a primary is ignored");

        display
            .handle(msg::SURFACE_CREATE, &surface_create(0, 2, 1))
            .unwrap();
        display
            .handle(msg::DRAW_FILL, &fill((0, 0, 2, 1), &[], 9))
            .unwrap();
        display.handle(msg::MARK, &[]).unwrap();
        assert!(display.mark);

        display.handle(msg::RESET, &[]).unwrap();
        assert!(!display.mark);
        assert_eq!(pixels(&display), [0, 0]);

        display.handle(msg::SURFACE_DESTROY, &le(&[0])).unwrap();
        assert!(display.primary().is_none());
        let err = display
            .handle(msg::DRAW_FILL, &fill((0, 0, 1, 1), &[], 9))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "protocol violation: draw to unknown surface 0"
        );
    }

    #[test]
    fn unsupported_and_malformed_messages_are_errors() {
        let mut display = display_with_primary(2, 2);

        let err = display.handle(311, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported: display message 311 (DRAW_TEXT)"
        );

        let mut huge_clip = le(&[0]);
        huge_clip.extend(rect(0, 0, 1, 1));
        huge_clip.push(CLIP_RECTS);
        huge_clip.extend(le(&[u32::MAX]));
        let err = display.handle(msg::DRAW_FILL, &huge_clip).unwrap_err();
        assert!(
            err.to_string().contains("clip of 4294967295 rects"),
            "{err}"
        );

        let mut scaled = copy((0, 0), &[], (1, 1), &[1], (0, 0));
        scaled[4..20].copy_from_slice(&rect(0, 0, 2, 2));
        let err = display.handle(msg::DRAW_COPY, &scaled).unwrap_err();
        assert!(err.to_string().contains("scaled DRAW_COPY"), "{err}");

        let err = display
            .handle(msg::SURFACE_CREATE, &surface_create(1, 1 << 16, 1 << 16))
            .unwrap_err();
        assert!(err.to_string().contains("pixel limit"), "{err}");
    }
}
