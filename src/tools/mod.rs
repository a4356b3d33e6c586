//! Operator commands that need no running daemon ([`cli`]: `timetable check`, `explain`).

pub mod cli;
