// SPDX-License-Identifier: Apache-2.0
//! A SPICE server for one framebuffer: the server side of the SPICE protocol over TCP, enough
//! for remote-viewer (spice-gtk 0.42) to show a display, a cursor and to send keyboard and
//! mouse input.
//!
//! Served: the link stage with RSA-OAEP tickets (one fresh RSA-1024 key per link), and the
//! main, display, inputs and cursor channels, one instance each, one client session at a
//! time. The display is fed through [`DisplaySink`] with solid fills, screen-to-screen copies
//! and images (sent as raw bitmaps, or LZ4 when the client accepts it); a slow client never
//! slows the producer (see `display_queue`).
//!
//! Left out on purpose: TLS, SASL, migration, the agent (clipboard, client-driven resize),
//! audio, USB redirection, video streams, image caching and the QUIC/LZ/GLZ codecs, client
//! mouse mode (it needs an absolute pointing device in the guest).
//!
//! Nothing here knows about KVM or guest memory; the VMM feeds the sink from its display
//! thread. Protocol facts come from `shared/reference/spice-protocol.md`.

#![deny(missing_docs)]

mod channel;
mod cursor;
mod display_msg;
mod display_queue;
mod inputs;
mod link;
mod log_limit;
mod main_channel;
mod proto;
mod region;
mod server;
mod sink;
mod wire;

use std::net::{IpAddr, SocketAddr};

pub use cursor::CursorShape;
pub use inputs::InputSink;
pub use region::Rect;
pub use server::SpiceServer;
pub use sink::DisplaySink;

/// Where and how the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiceConfig {
    /// Address to listen on (127.0.0.1 unless the user asks otherwise).
    pub addr: IpAddr,
    /// TCP port; 0 picks a free one (see [`SpiceServer::local_addr`]).
    pub port: u16,
    /// Password clients must present; `None` disables ticketing (any client may connect).
    pub password: Option<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpiceError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// A server thread could not be started.
    #[error("cannot start a SPICE server thread")]
    Thread(#[source] std::io::Error),
    /// Clients refuse to send passwords longer than this.
    #[error("SPICE passwords are limited to {0} bytes")]
    PasswordTooLong(usize),
}
