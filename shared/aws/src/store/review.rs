//! The review facet: a chunk's correction written in one transaction with
//! the job's review counts, under a condition on the chunk's status,
//! version and stored revision count.

use lotsawa_core::review::ChunkEdit;
use lotsawa_core::store::{Edited, ReviewStore};

use super::*;

#[async_trait]
impl ReviewStore for DynamoStore {
    async fn edit_chunk(&self, id: JobId, edit: &ChunkEdit) -> Result<Edited, StoreError> {
        // A chunk written before corrections has neither attribute: it
        // reads as version 0 with no revisions.
        let version = if edit.version == 0 {
            "(attribute_not_exists(#ver) OR #ver = :ver)"
        } else {
            "#ver = :ver"
        };
        let revs = if edit.revisions_before == 0 {
            "(attribute_not_exists(#revs) OR #revs = :before)"
        } else {
            "#revs = :before"
        };
        let revisions = lotsawa_core::review::encode(&edit.revisions)
            .ok_or_else(|| StoreError::Corrupt("a chunk edit without revisions".into()))?;
        let chunk = Update::builder()
            .table_name(&self.config.table)
            .set_key(Some(Self::key(job_pk(id), &chunk_sk(edit.index))))
            .condition_expression(format!("#st = :done AND {version} AND {revs}"))
            .update_expression(
                "SET #tr = :tr, #rv = :rv, #revs = :revs, #cur = :cur, #rd = :rd, \
                 #ver = if_not_exists(#ver, :zero) + :bump REMOVE #tkey",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#ver", "version")
            .expression_attribute_names("#revs", "revs")
            .expression_attribute_names("#tr", "translation")
            .expression_attribute_names("#rv", "revisions")
            .expression_attribute_names("#cur", "currentRev")
            .expression_attribute_names("#rd", "reviewed")
            .expression_attribute_names("#tkey", "translationKey")
            .expression_attribute_values(":done", s("completed"))
            .expression_attribute_values(":ver", n(edit.version))
            .expression_attribute_values(":before", n(edit.revisions_before))
            .expression_attribute_values(":tr", s(edit.translation.clone()))
            .expression_attribute_values(":rv", s(revisions))
            .expression_attribute_values(":revs", n(edit.revisions.len()))
            .expression_attribute_values(":cur", n(edit.current))
            .expression_attribute_values(":rd", AttributeValue::Bool(edit.reviewed))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":bump", n(u32::from(edit.bump)));
        let mut items = vec![
            TransactWriteItem::builder()
                .update(chunk.build().map_err(build)?)
                .build(),
        ];
        if edit.reviewed_delta != 0 || edit.text_changed {
            let job = Update::builder()
                .table_name(&self.config.table)
                .set_key(Some(Self::key(job_pk(id), "JOB")))
                .update_expression("ADD #rd :rd, #ed :ed")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#rd", "reviewed")
                .expression_attribute_names("#ed", "edits")
                .expression_attribute_values(":rd", n(edit.reviewed_delta))
                .expression_attribute_values(":ed", n(u32::from(edit.text_changed)));
            items.push(
                TransactWriteItem::builder()
                    .update(job.build().map_err(build)?)
                    .build(),
            );
        }
        match self.transact(items).await? {
            Tx::Done => Ok(Edited::Done),
            Tx::ConditionFailed => {
                let now = self.chunks_between(id, edit.index, edit.index + 1).await?;
                Ok(match now.first() {
                    Some(c) if c.status == lotsawa_core::ChunkStatus::Completed => Edited::Stale,
                    _ => Edited::NotTranslated,
                })
            }
        }
    }
}
