//! Backups and restores of the database file, and the lock that tells a
//! running server's database from an idle one.
//!
//! A backup copies a live database with SQLite's online backup API from
//! inside one read transaction: in WAL mode the server goes on writing, and
//! the copy is the database as it stood when the backup began (every commit
//! before it, none after). A restore refuses a database a server holds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::store::SCHEMA_VERSION;

/// Why a backup or restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// SQLite said no.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file could not be read, written or locked.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The destination of a backup exists already.
    #[error("{0} exists; a backup never overwrites a file (remove it or name another)")]
    Exists(PathBuf),
    /// A server has the database open.
    #[error("a server is running on {0}; stop it first (`systemctl stop lotsawa`), then restore")]
    ServerRunning(PathBuf),
    /// The file to restore is not a Lotsawa database this build can serve.
    #[error("{path} is not a Lotsawa database this build can restore: {why}")]
    NotRestorable {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An exclusive hold on a database file, kept by a running server for its
/// whole life (an advisory `flock` on the file, which SQLite's own locks
/// ignore); released when dropped or when the process ends, however it ends.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
}

impl DbLock {
    /// Take the hold, or say that a server has it. The database file is
    /// created if missing (private to its owner, as the store creates it).
    pub fn acquire(db: &Path) -> Result<Self, BackupError> {
        crate::store::create_private_file(db).map_err(|e| BackupError::Io {
            path: db.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let file = File::open(db).map_err(io(db))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(BackupError::ServerRunning(db.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(db)(e)),
        }
    }
}

/// What a backup copied.
#[derive(Debug, Clone, Copy)]
pub struct BackupReport {
    /// Database pages copied.
    pub pages: u64,
    /// Bytes of the copy.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Pages copied per step: progress is reported between steps.
const STEP_PAGES: i32 = 1024;

/// Copy the database `db` (a server may be writing it) to the new file
/// `dest`, calling `progress(done, total)` in pages as it goes. The copy is
/// written beside `dest` and renamed into place once complete and checked,
/// so `dest` is a whole database or absent.
pub fn backup(
    db: &Path,
    dest: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    if !db.exists() {
        return Err(BackupError::Io {
            path: db.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such database"),
        });
    }
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    source.busy_timeout(Duration::from_secs(10))?;
    let partial = partial_path(dest);
    let _ = std::fs::remove_file(&partial);
    crate::store::create_private_file(&partial).map_err(|e| BackupError::Io {
        path: partial.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let result = (|| {
        let mut target = Connection::open(&partial)?;
        // One read transaction over the whole copy: the snapshot the
        // backup reads stays the one it began with while the server
        // commits, so the copy is consistent and never restarts.
        source.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")?;
        let pages = copy_all(&source, &mut target, &mut progress)?;
        source.execute_batch("COMMIT;")?;
        let check: String = target.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(BackupError::NotRestorable {
                path: dest.to_path_buf(),
                why: format!("the copy failed its check: {check}"),
            });
        }
        target.pragma_update(None, "journal_mode", "DELETE")?;
        drop(target);
        Ok(pages)
    })();
    let pages = match result {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, dest).map_err(io(dest))?;
    let bytes = std::fs::metadata(dest).map_err(io(dest))?.len();
    Ok(BackupReport {
        pages,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Check that `file` is a Lotsawa database this build can serve: it opens,
/// passes SQLite's check, has a jobs table, and its schema is not newer
/// than this build's.
pub fn check_restorable(file: &Path) -> Result<usize, BackupError> {
    let not = |why: String| BackupError::NotRestorable {
        path: file.to_path_buf(),
        why,
    };
    if !file.is_file() {
        return Err(not("no such file".into()));
    }
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not(e.to_string()))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| not(format!("not an SQLite database ({e})")))?;
    if check != "ok" {
        return Err(not(format!("it failed SQLite's check: {check}")));
    }
    let jobs: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| not(e.to_string()))?;
    if jobs != 1 {
        return Err(not("it has no jobs table".into()));
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| not(e.to_string()))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > SCHEMA_VERSION {
        return Err(not(format!(
            "its schema version {version} is newer than this build's {SCHEMA_VERSION}"
        )));
    }
    Ok(version)
}

/// Replace the database `db` with the backup `file`, after checking the
/// backup, and only while no server holds `db`. The next server to open it
/// migrates it if the backup is of an older schema.
pub fn restore(
    file: &Path,
    db: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    check_restorable(file)?;
    let lock = DbLock::acquire(db)?;
    let source = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut target = Connection::open(db)?;
    target.busy_timeout(Duration::from_secs(10))?;
    let pages = copy_all(&source, &mut target, progress)?;
    // SQLite closes its own handles before the hold is let go (closing any
    // descriptor of the file would drop the process's SQLite locks).
    drop(target);
    drop(source);
    drop(lock);
    let bytes = std::fs::metadata(db).map_err(io(db))?.len();
    Ok(BackupReport {
        pages,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn copy_all(
    source: &Connection,
    target: &mut Connection,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, BackupError> {
    let copy = Backup::new(source, target)?;
    loop {
        let step = copy.step(STEP_PAGES)?;
        let p = copy.progress();
        let total = u64::try_from(p.pagecount).unwrap_or(0);
        let left = u64::try_from(p.remaining).unwrap_or(0);
        progress(total - left.min(total), total);
        match step {
            StepResult::Done => return Ok(total),
            StepResult::More => {}
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    dest.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_database_cannot_be_held_again_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("lotsawa.db");
        let first = DbLock::acquire(&db).expect("free");
        assert!(matches!(
            DbLock::acquire(&db),
            Err(BackupError::ServerRunning(_))
        ));
        drop(first);
        DbLock::acquire(&db).expect("free again");
    }

    #[test]
    fn a_backup_never_overwrites_and_a_non_database_is_not_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("lotsawa.db");
        drop(crate::SqliteStore::open(&db).expect("open"));
        let dest = dir.path().join("copy.db");
        std::fs::write(&dest, b"keep me").expect("write");
        assert!(matches!(
            backup(&db, &dest, |_, _| {}),
            Err(BackupError::Exists(_))
        ));
        assert_eq!(std::fs::read(&dest).expect("read"), b"keep me");
        let err = restore(&dest, &db, |_, _| {}).expect_err("not a database");
        assert!(matches!(err, BackupError::NotRestorable { .. }), "{err}");
    }
}
