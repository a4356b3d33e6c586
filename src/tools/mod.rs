//! Operator commands: the command line's definition ([`args`]) and how each command runs
//! ([`run`]); the commands that need no daemon ([`cli`]: `timetable check`, `explain`) and
//! the account commands (`users`, `tokens`) and `calendars`.

mod accounts;
pub mod args;
mod calendars;
pub mod cli;
pub mod run;
pub mod unit;
