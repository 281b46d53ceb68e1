// SPDX-License-Identifier: Apache-2.0
//! Protocol numbers from spice-protocol's `spice/protocol.h` and `spice/enums.h` (0.14.3).
//!
//! Only the numbers this server sends or accepts are listed; see
//! `shared/reference/spice-protocol.md` for the layouts they belong to.

/// "REDQ", the first four bytes of every link header.
pub const MAGIC: u32 = 0x5144_4552;
/// The only protocol major version spice-gtk speaks.
pub const VERSION_MAJOR: u32 = 2;
/// The minor version we announce (spice-gtk 0.42 sends 2 too).
pub const VERSION_MINOR: u32 = 2;
/// Size of `SpiceLinkHeader`.
pub const LINK_HEADER_SIZE: usize = 16;
/// Size of `SpiceLinkMess` without its capability words.
pub const LINK_MESS_SIZE: u32 = 18;
/// Size of `SpiceLinkReply` without its capability words.
pub const LINK_REPLY_SIZE: u32 = 178;
/// `SPICE_TICKET_PUBKEY_BYTES`: DER SubjectPublicKeyInfo of an RSA-1024 key.
pub const TICKET_PUBKEY_BYTES: usize = 162;
/// RSA-1024 ciphertext size: what the client sends as its ticket.
pub const TICKET_BYTES: usize = 128;
/// `SPICE_MAX_PASSWORD_LENGTH` (the client refuses longer passwords).
pub const MAX_PASSWORD_LENGTH: usize = 60;

/// Channel types (`SPICE_CHANNEL_*`).
pub const CHANNEL_MAIN: u8 = 1;
/// Display channel type.
pub const CHANNEL_DISPLAY: u8 = 2;
/// Inputs channel type.
pub const CHANNEL_INPUTS: u8 = 3;
/// Cursor channel type.
pub const CHANNEL_CURSOR: u8 = 4;

/// Common capability bits (`SPICE_COMMON_CAP_*`).
pub const COMMON_CAP_AUTH_SELECTION: u32 = 0;
/// The client may authenticate with an RSA-encrypted ticket.
pub const COMMON_CAP_AUTH_SPICE: u32 = 1;
/// 6-byte data headers instead of 18-byte ones.
pub const COMMON_CAP_MINI_HEADER: u32 = 3;
/// `SPICE_DISPLAY_CAP_LZ4_COMPRESSION`: the client decodes `SPICE_IMAGE_TYPE_LZ4`.
pub const DISPLAY_CAP_LZ4: u32 = 5;

/// Link results (`SPICE_LINK_ERR_*`).
pub const LINK_OK: u32 = 0;
/// Unspecified error.
pub const LINK_ERR_ERROR: u32 = 1;
/// The link message is inconsistent.
pub const LINK_ERR_INVALID_DATA: u32 = 3;
/// The major version is not 2.
pub const LINK_ERR_VERSION_MISMATCH: u32 = 4;
/// Wrong password or undecryptable ticket.
pub const LINK_ERR_PERMISSION_DENIED: u32 = 7;
/// A non-main channel named a session that does not exist.
pub const LINK_ERR_BAD_CONNECTION_ID: u32 = 8;
/// Unknown channel type or id.
pub const LINK_ERR_CHANNEL_NOT_AVAILABLE: u32 = 9;

/// Messages every channel's server side may send (`SPICE_MSG_*`).
pub const MSG_SET_ACK: u16 = 3;
/// Server ping; the client answers with `MSGC_PONG`.
pub const MSG_PING: u16 = 4;

/// Messages every channel's client side may send (`SPICE_MSGC_*`).
pub const MSGC_ACK_SYNC: u16 = 1;
/// One acknowledgement per ack window.
pub const MSGC_ACK: u16 = 2;
/// Answer to `MSG_PING`.
pub const MSGC_PONG: u16 = 3;
/// Migration only; ignored.
pub const MSGC_MIGRATE_FLUSH_MARK: u16 = 4;
/// Migration only; ignored.
pub const MSGC_MIGRATE_DATA: u16 = 5;
/// The client says it is going away.
pub const MSGC_DISCONNECTING: u16 = 6;

/// Main channel server messages.
pub const MSG_MAIN_INIT: u16 = 103;
/// List of channels the client may connect.
pub const MSG_MAIN_CHANNELS_LIST: u16 = 104;

/// Main channel client messages: first and last type number spice-gtk may send.
pub const MSGC_MAIN_FIRST: u16 = 101;
/// Last main channel client message type (`SPICE_MSGC_MAIN_QUALITY_INDICATOR`).
pub const MSGC_MAIN_LAST: u16 = 112;
/// The client asks for the channels list.
pub const MSGC_MAIN_ATTACH_CHANNELS: u16 = 104;
/// The client asks for another mouse mode.
pub const MSGC_MAIN_MOUSE_MODE_REQUEST: u16 = 105;

/// Mouse mode flags (`SPICE_MOUSE_MODE_*`).
pub const MOUSE_MODE_SERVER: u32 = 1;

/// Display channel server messages.
pub const MSG_DISPLAY_MARK: u16 = 102;
/// Screen-to-screen copy.
pub const MSG_DISPLAY_COPY_BITS: u16 = 104;
/// Solid fill.
pub const MSG_DISPLAY_DRAW_FILL: u16 = 302;
/// Image copy.
pub const MSG_DISPLAY_DRAW_COPY: u16 = 304;
/// Surface creation.
pub const MSG_DISPLAY_SURFACE_CREATE: u16 = 314;
/// Surface destruction.
pub const MSG_DISPLAY_SURFACE_DESTROY: u16 = 315;

/// Display channel client messages: `INIT` .. `PREFERRED_VIDEO_CODEC_TYPE`.
pub const MSGC_DISPLAY_INIT: u16 = 101;
/// Last display channel client message type.
pub const MSGC_DISPLAY_LAST: u16 = 105;

/// Inputs channel server messages.
pub const MSG_INPUTS_INIT: u16 = 101;
/// Acknowledges `MOTION_ACK_BUNCH` motion or position messages.
pub const MSG_INPUTS_MOUSE_MOTION_ACK: u16 = 111;
/// `SPICE_INPUT_MOTION_ACK_BUNCH`.
pub const MOTION_ACK_BUNCH: u32 = 4;

/// Inputs channel client messages.
pub const MSGC_INPUTS_KEY_DOWN: u16 = 101;
/// Key release.
pub const MSGC_INPUTS_KEY_UP: u16 = 102;
/// Wanted lock-key state.
pub const MSGC_INPUTS_KEY_MODIFIERS: u16 = 103;
/// Raw scancodes (only with the KEY_SCANCODE cap, which we do not offer).
pub const MSGC_INPUTS_KEY_SCANCODE: u16 = 104;
/// Relative motion.
pub const MSGC_INPUTS_MOUSE_MOTION: u16 = 111;
/// Absolute position (client mouse mode).
pub const MSGC_INPUTS_MOUSE_POSITION: u16 = 112;
/// Button press.
pub const MSGC_INPUTS_MOUSE_PRESS: u16 = 113;
/// Button release.
pub const MSGC_INPUTS_MOUSE_RELEASE: u16 = 114;

/// Cursor channel server messages.
pub const MSG_CURSOR_INIT: u16 = 101;
/// New shape (and position, visibility).
pub const MSG_CURSOR_SET: u16 = 103;
/// New position.
pub const MSG_CURSOR_MOVE: u16 = 104;
/// Hide the cursor.
pub const MSG_CURSOR_HIDE: u16 = 105;

/// `SPICE_SURFACE_FMT_32_xRGB`.
pub const SURFACE_FMT_32_XRGB: u32 = 32;
/// `SPICE_SURFACE_FLAGS_PRIMARY`.
pub const SURFACE_FLAGS_PRIMARY: u32 = 1;
/// `SPICE_ROPD_OP_PUT`: plain copy.
pub const ROPD_OP_PUT: u16 = 8;
/// `SPICE_BRUSH_TYPE_SOLID`.
pub const BRUSH_TYPE_SOLID: u8 = 1;
/// `SPICE_CLIP_TYPE_NONE`.
pub const CLIP_TYPE_NONE: u8 = 0;
/// `SPICE_IMAGE_TYPE_BITMAP`.
pub const IMAGE_TYPE_BITMAP: u8 = 0;
/// `SPICE_IMAGE_TYPE_LZ4`.
pub const IMAGE_TYPE_LZ4: u8 = 109;
/// `SPICE_BITMAP_FMT_32BIT` (bytes B, G, R, x).
pub const BITMAP_FMT_32BIT: u8 = 8;
/// `SPICE_BITMAP_FLAGS_TOP_DOWN`.
pub const BITMAP_FLAGS_TOP_DOWN: u8 = 4;
/// `SPICE_CURSOR_TYPE_ALPHA`.
pub const CURSOR_TYPE_ALPHA: u8 = 0;
/// `SPICE_CURSOR_FLAGS_NONE`: no shape follows.
pub const CURSOR_FLAGS_NONE: u16 = 1;
