//! # scriptd
//!
//! A rules-engine daemon for video-management systems: analytics occurrences arrive over
//! MQTT, each is matched against the operators' scripts (event, cameras, timetable), and the
//! scripts' reactions are delivered to their users.

pub mod api;
pub mod index;
pub mod live;
pub mod rules;
pub mod script;
pub mod secret;
pub mod store;
pub mod timetable;
pub mod validation;
