//! Corrections: a chunk edit is a compare-and-set on the chunk's version
//! and revisions, written with the job's review counts.

use lotsawa_core::review::{EditRequest, Editor, EngineLabel, plan};
use lotsawa_core::store::Edited;

use super::*;

fn label() -> EngineLabel {
    EngineLabel {
        engine: "echo".into(),
        model: None,
    }
}

fn editor() -> Editor {
    Editor {
        key_id: Some("key1".into()),
        at: Utc::now(),
    }
}

fn text(t: &str) -> EditRequest {
    EditRequest {
        text: Some(t.into()),
        ..Default::default()
    }
}

/// An edit is written once, stale edits and edits of untranslated chunks
/// are refused, and the job counts reviewed chunks and edits.
pub async fn chunk_edits_are_compare_and_set(store: Handle) {
    let job = start(&store, &create(&store, 2).await).await;
    store
        .checkpoint(job.id, job.run, &done(0, "engine text"))
        .await
        .expect("checkpoint");
    let read = store.chunks(job.id, 0).await.expect("chunks");
    assert!(
        read[0].review.revisions.is_empty(),
        "no revisions until an edit"
    );
    assert_eq!(read[0].review.version, 0);

    // A chunk not translated yet refuses an edit planned as if it were.
    let mut fake = read[1].clone();
    fake.status = ChunkStatus::Completed;
    fake.translation = Some("x".into());
    let on_pending = plan(&fake, &text("y"), &label(), &editor()).expect("plan");
    assert_eq!(
        store.edit_chunk(job.id, &on_pending).await.expect("edit"),
        Edited::NotTranslated
    );

    let mut req = text("human text");
    req.note = Some("a note".into());
    let edit = plan(&read[0], &req, &label(), &editor()).expect("plan");
    assert_eq!(
        store.edit_chunk(job.id, &edit).await.expect("edit"),
        Edited::Done
    );
    // The same edit again was planned on the old version: stale.
    assert_eq!(
        store.edit_chunk(job.id, &edit).await.expect("edit"),
        Edited::Stale
    );

    let after = store.chunks(job.id, 0).await.expect("chunks");
    let c = &after[0];
    assert_eq!(c.translation.as_deref(), Some("human text"));
    assert_eq!(c.review.version, 1);
    assert_eq!(c.review.current, 2);
    assert_eq!(c.review.revisions, edit.revisions, "revisions round-trip");
    assert_eq!(c.review.revisions[1].note.as_deref(), Some("a note"));
    assert_eq!(c.status, ChunkStatus::Completed);
    let j = store.get(job.id).await.expect("get");
    assert_eq!((j.review.reviewed, j.review.edits), (0, 1));

    // Reviewed, then back to the engine's text (which clears it).
    let mark = EditRequest {
        reviewed: Some(true),
        ..Default::default()
    };
    let e = plan(c, &mark, &label(), &editor()).expect("plan");
    assert_eq!(
        store.edit_chunk(job.id, &e).await.expect("edit"),
        Edited::Done
    );
    let c = &store.chunks(job.id, 0).await.expect("chunks")[0];
    assert!(c.review.reviewed);
    assert_eq!(store.get(job.id).await.expect("get").review.reviewed, 1);
    let back = EditRequest {
        revision: Some(1),
        ..Default::default()
    };
    let e = plan(c, &back, &label(), &editor()).expect("plan");
    assert_eq!(
        store.edit_chunk(job.id, &e).await.expect("edit"),
        Edited::Done
    );
    let c = &store.chunks(job.id, 0).await.expect("chunks")[0];
    assert_eq!(c.translation.as_deref(), Some("engine text"));
    assert!(!c.review.reviewed);
    assert_eq!((c.review.current, c.review.version), (1, 3));
    let j = store.get(job.id).await.expect("get");
    assert_eq!((j.review.reviewed, j.review.edits), (0, 2));

    // An engine revision beside the others keeps the version (the tag) but
    // two made from one read cannot both land.
    let other = EngineLabel {
        engine: "offline".into(),
        model: None,
    };
    let a = lotsawa_core::review::engine_revision(c, "offline a", &other, &label(), Utc::now())
        .expect("revision");
    let b = lotsawa_core::review::engine_revision(c, "offline b", &other, &label(), Utc::now())
        .expect("revision");
    assert_eq!(
        store.edit_chunk(job.id, &a).await.expect("edit"),
        Edited::Done
    );
    assert_eq!(
        store.edit_chunk(job.id, &b).await.expect("edit"),
        Edited::Stale
    );
    let c = &store.chunks(job.id, 0).await.expect("chunks")[0];
    assert_eq!(c.review.revisions.len(), 3);
    assert_eq!(
        (c.review.version, c.translation.as_deref()),
        (3, Some("engine text"))
    );
}
