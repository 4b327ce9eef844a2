//! The review facet: a chunk's corrections written with a compare-and-set
//! on its version and stored revisions, and the job's review counts in the
//! same commit.

use lotsawa_core::review::ChunkEdit;
use lotsawa_core::store::{Edited, ReviewStore};

use super::*;

/// The edit of one chunk, by primary key, only while it is completed at
/// the version and revision count read.
const EDIT_SQL: &str = "UPDATE chunks SET translation = ?1, revisions = ?2, revs = ?3,
    current_rev = ?4, reviewed = ?5, version = version + ?6
 WHERE job_seq = ?7 AND idx = ?8 AND status = 'completed' AND version = ?9 AND revs = ?10";

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn edit_chunk(&self, id: JobId, edit: &ChunkEdit) -> PortResult<Edited> {
        let edit = edit.clone();
        Ok(self
            .write(move |conn| {
                let seq = seq_of(conn, id)?;
                let n = exec(
                    conn,
                    EDIT_SQL,
                    params![
                        edit.translation,
                        lotsawa_core::review::encode(&edit.revisions),
                        edit.revisions.len() as i64,
                        edit.current,
                        edit.reviewed,
                        u32::from(edit.bump),
                        seq,
                        edit.index,
                        edit.version,
                        edit.revisions_before
                    ],
                )?;
                if n != 1 {
                    let completed: Option<bool> = conn
                        .query_row(
                            "SELECT status = 'completed' FROM chunks WHERE job_seq = ?1 AND idx = ?2",
                            params![seq, edit.index],
                            |r| r.get(0),
                        )
                        .optional()?;
                    return Ok(match completed {
                        Some(true) => Edited::Stale,
                        _ => Edited::NotTranslated,
                    });
                }
                exec(
                    conn,
                    "UPDATE jobs SET reviewed = MAX(reviewed + ?1, 0), edits = edits + ?2 WHERE seq = ?3",
                    params![edit.reviewed_delta, u32::from(edit.text_changed), seq],
                )?;
                Ok(Edited::Done)
            })
            .await?)
    }
}
