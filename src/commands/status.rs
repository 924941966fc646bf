//! `pgbak status [--json | --journal]`: opens the journal (unless `$PGBAK` is unused), has
//! [`crate::report`] build the report and prints it in the chosen format.

use crate::Error;
use crate::config;
use crate::home::environment::PgbakHome;
use crate::home::journal_file;
use crate::os::clock;
use crate::report::{StatusReport, build_report, render_human, render_journal};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Journal,
}

pub fn run(home: &PgbakHome, format: Format, out: &mut dyn Write) -> Result<(), Error> {
    let config = config::load(&home.config_path())?;
    let policy = config.machine_policy();
    let now = clock::now();
    if journal_file::is_unused(home)? {
        if format == Format::Journal {
            writeln!(
                out,
                "# no journal: {} is unused (nothing archived yet)",
                home.path.display()
            )
            .map_err(Error::output("the status report"))?;
            return Ok(());
        }
        let report = build_report(home, None, &policy, config.wal.conflicts_max_bytes, now)?;
        return print(&report, format, out);
    }
    let opened = journal_file::open_journal(home, now)?;
    if format == Format::Journal {
        return Ok(render_journal(&opened, out)?);
    }
    let report = build_report(
        home,
        Some(&opened),
        &policy,
        config.wal.conflicts_max_bytes,
        now,
    )?;
    print(&report, format, out)
}

fn print(report: &StatusReport, format: Format, out: &mut dyn Write) -> Result<(), Error> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
                .map_err(Error::output("the JSON report"))?;
        }
        _ => render_human(report, out).map_err(Error::output("the status report"))?,
    }
    Ok(())
}
