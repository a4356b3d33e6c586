//! # scriptd
//!
//! A rules-engine daemon for video-management systems: analytics occurrences arrive over
//! MQTT, each is matched against the operators' scripts (event, cameras, timetable), and the
//! scripts' reactions are delivered to their users.
//!
//! # Layout
//!
//! The modules follow an occurrence through the daemon:
//!
//! ```text
//!  mqtt ─▶ source ─▶ intake ──────────────▶ store::outbox ─▶ dispatch ─▶ MQTT push,
//!  (link,   (acks     (decode, match in the  (one commit per   (bulkheads,   Telegram,
//!   broker)  after     index, cooldowns,      batch, then the   breakers,     webhook,
//!            commit)   snoozes, plan)         ack)              retries)      stream hub)
//!                        │      ▲
//!                        ▼      │
//!                      live ◀── store (scripts, users, catalogs)   ◀── api (HTTP), tools (CLI)
//!                      (snapshot: script records + index)
//! ```
//!
//! - [`mqtt`]: connection plumbing shared by the source and the pusher, and the embedded
//!   broker. [`source`]: occurrences in, acknowledged only once durable.
//! - [`intake`]: decoding ([`intake::occurrence`]), planning deliveries, and
//!   [`intake::explain`], which asks the same rules.
//! - [`script`]: validation, the canonical JSON view, field errors. [`timetable`]: parsing
//!   and the reference evaluation. [`index`]: the compiled schedule index, the rules it is
//!   built from and a script's week. [`live`]: the snapshot of valid scripts and their index.
//! - [`delivery`]: what a delivery carries (reaction kinds, ids, payloads, texts), below both
//!   the intake and the dispatchers.
//! - [`store`]: SQLite (migrations, scripts, users, tokens, snoozes) with the outbox
//!   ([`store::outbox`]). [`dispatch`]: the outbox drained through the senders.
//! - [`api`]: the HTTP API and the status page. [`ops`]: systemd, reloads, health, metrics,
//!   logging. [`tools`]: the command line. [`mod@bench`]: the benchmarks. [`app`]: wiring
//!   it all, with the hand-over between the intake's writer and the dispatcher.
//! - Shared below everything: [`settings`] (load, validate, reload), [`backoff`] (every
//!   retry's delay), [`secret`] (values masked in logs and `Debug`).
//!
//! Dependencies point down this list's data flow: nothing below reaches up into [`api`],
//! and [`store`] knows nothing of [`dispatch`] or [`intake`].

pub mod api;
pub mod app;
pub mod backoff;
pub mod bench;
pub mod delivery;
pub mod dispatch;
pub mod index;
pub mod intake;
pub mod live;
pub mod mqtt;
pub mod ops;
pub mod script;
pub mod secret;
pub mod settings;
pub mod source;
pub mod store;
pub mod timetable;
pub mod tools;
