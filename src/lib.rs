//! # scriptd
//!
//! A rules-engine daemon for video-management systems: analytics occurrences arrive over
//! MQTT, each is matched against the operators' scripts (event, cameras, timetable), and the
//! scripts' reactions are delivered to their users.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod dispatch;
pub mod occurrence;
pub mod secret;
pub mod source;
pub mod validation;
