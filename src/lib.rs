//! # scriptd
//!
//! A rules-engine daemon for video-management systems: analytics occurrences arrive over
//! MQTT, each is matched against the operators' scripts (event, cameras, timetable), and the
//! scripts' reactions are delivered to their users.

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod delivery;
pub mod dispatch;
pub mod explain;
pub mod health;
pub mod hub;
pub mod index;
pub mod live;
pub mod logging;
pub mod mqtt;
pub mod occurrence;
pub mod outbox;
pub mod pipeline;
pub mod rules;
pub mod script;
pub mod secret;
pub mod settings;
pub mod source;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod timetable;
pub mod validation;
pub mod week;
