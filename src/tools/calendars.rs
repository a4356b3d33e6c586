//! `scriptd calendars list` and `scriptd calendars import --calendar ID FILE`.

use anyhow::Context;

use super::args::CalendarsCommand;
use crate::script::calendar::MAX_DATES;
use crate::script::validation::FieldErrors;
use crate::store::{Db, StoreError, calendars};
use crate::timetable::ical::import_dates;

/// Runs a `calendars` command against `store`.
pub fn run(cmd: CalendarsCommand, store: &Db) -> anyhow::Result<()> {
    match cmd {
        CalendarsCommand::List => {
            for c in store.read(|tx| calendars::all(tx))? {
                let owner = c.owner_id.map_or_else(|| "-".to_owned(), |o| o.to_string());
                println!(
                    "{}\towner {}\t{}\t{} dates\t{}",
                    c.id,
                    owner,
                    c.input.timezone,
                    c.input.dates.len(),
                    c.input.name
                );
            }
        }
        CalendarsCommand::Import { calendar, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
            let dates = match import_dates(&text, chrono::Utc::now().date_naive()) {
                Ok(d) => d,
                Err(errors) => {
                    println!("{}", errors.to_body());
                    anyhow::bail!("nothing imported: {}", errors.message());
                }
            };
            let added = store.write(|tx| {
                let Some((cal, added)) = calendars::add_dates(tx, calendar, &dates)? else {
                    return Err(StoreError::NotFound(format!("calendar {calendar}")));
                };
                if cal.input.dates.len() > MAX_DATES {
                    return Err(StoreError::Invalid(FieldErrors::single(
                        "file",
                        format!(
                            "would give calendar {calendar} {} dates; at most {MAX_DATES} are kept",
                            cal.input.dates.len()
                        ),
                    )));
                }
                Ok(added)
            });
            match added {
                Ok(n) => println!("added {n} dates to calendar {calendar}"),
                Err(StoreError::Invalid(errors)) => {
                    println!("{}", errors.to_body());
                    anyhow::bail!("nothing imported: {}", errors.message());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
