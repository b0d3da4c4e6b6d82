//! The Chinwag relay: the server that people dial.
//!
//! It owns rooms and presence (who is in which room, muted or not, camera on or not), the
//! fan-out of media frames from each participant to everyone else in the same room, and the
//! limits that keep one misbehaving or slow client from hurting the others. It serves
//! WebSockets on `/v1` and plain HTTP `/healthz` and `/metrics` on the same port, optionally
//! under TLS.
//!
//! It deliberately does not look inside media payloads (it never decodes audio or video), keep
//! any state beyond a room's life, or talk to another service.
//!
//! The logic lives in sans-IO cores that take `now` and return decisions: [`rooms::Rooms`]
//! (join, leave, state), [`chinwag_queue::MediaQueue`] (one receiver's bounded, prioritised
//! send queue, the same queue every sender of media uses), [`limiter::RateLimiter`] and
//! [`limiter::FrameMeter`] (every frame a client sends, counted), [`sources::Sources`]
//! (connections per source address), [`guard::PasswordGuard`] (password guessing) and
//! [`token`] (signed join tokens). [`server`] is the thin tokio shell around them; its main
//! type is [`Relay`].

pub mod cluster;
pub mod config;
pub mod guard;
mod http;
mod layers;
pub mod limiter;
mod metered;
mod metrics;
pub mod pacer;
pub mod rooms;
pub mod server;
mod socket;
pub mod sources;
pub mod token;

pub use config::{Config, ConfigError};
pub use server::{Relay, RelayError};
