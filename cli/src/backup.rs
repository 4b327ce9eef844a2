//! `lotsawa backup FILE` and `lotsawa restore FILE`: a consistent copy of a
//! server's database while it runs, and its return into a stopped one.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use lotsawa_local::backup::{self, BackupReport};

use crate::config::{self, ProcessEnv};

/// What to do.
#[derive(Debug)]
pub enum Action {
    /// Copy the database to a new file.
    Backup(PathBuf),
    /// Replace the database with a backup.
    Restore(PathBuf),
}

fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} pages {{elapsed}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn report(verb: &str, from: &std::path::Path, to: &std::path::Path, r: &BackupReport) {
    eprintln!(
        "{verb} {} to {}: {} pages, {} bytes in {:.2} s",
        from.display(),
        to.display(),
        r.pages,
        r.bytes,
        r.elapsed.as_secs_f64()
    );
}

/// Run a backup or a restore of the database `--db` (or LOTSAWA_DB, or the
/// configuration file's `db`) names.
pub async fn run(action: Action, db: Option<PathBuf>) -> ExitCode {
    let db = match config::db_path(db, &ProcessEnv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let lotsawa_local::Db::Postgres(_) = lotsawa_local::Db::of(&db) {
        eprintln!(
            "error: {} is a PostgreSQL database: back it up with the server's own tools \
             (pg_dump -Fc, or continuous archiving for point-in-time recovery) and restore with \
             pg_restore; `lotsawa backup` and `restore` copy SQLite files",
            lotsawa_local::Db::of(&db).shown()
        );
        return ExitCode::from(2);
    }
    let done = tokio::task::spawn_blocking(move || match action {
        Action::Backup(dest) => {
            let bar = bar("backup");
            let r = backup::backup(&db, &dest, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            });
            bar.finish_and_clear();
            r.map(|r| report("copied", &db, &dest, &r))
        }
        Action::Restore(file) => {
            let bar = bar("restore");
            let r = backup::restore(&file, &db, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            });
            bar.finish_and_clear();
            r.map(|r| report("restored", &file, &db, &r))
        }
    })
    .await;
    match done {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
