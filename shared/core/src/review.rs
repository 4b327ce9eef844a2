//! A translator's corrections: each chunk's revisions (the engine's output
//! and every human or engine text after it), which one is current, whether
//! a person reviewed it, and the version its `ETag` names.
//!
//! A chunk's `translation` is always its current revision's text, so the
//! job's result, downloads and exports need nothing else. Until the first
//! edit a chunk stores no revision list: its one revision is the engine's
//! output, described from the job. The first edit writes that revision and
//! the new one together. Every change to the current text or the reviewed
//! flag raises the chunk's version, and a write names the version it read
//! (`If-Match`), so two translators never overwrite each other unseen.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ledger::{ChunkRecord, ChunkStatus};

/// Most revisions one chunk keeps.
pub const MAX_REVISIONS: usize = 50;
/// Longest revision text, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
/// Most bytes one chunk's revisions take stored (encoded, with the current
/// text beside them): a DynamoDB item holds 400 KB with the chunk's
/// context and examples.
pub const MAX_TOTAL_BYTES: usize = 200 * 1024;
/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Who made a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A translation engine.
    Engine,
    /// A person (the API, the dashboard, an imported XLIFF).
    Human,
}

impl Origin {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Engine => "engine",
            Origin::Human => "human",
        }
    }
}

/// One text a chunk has had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Its number, from 1 (the engine's first output).
    pub n: u32,
    /// The text.
    pub text: String,
    /// Engine or human.
    pub origin: Origin,
    /// The engine, for an engine revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// The model, for an engine revision whose engine has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// When it was made (unknown for a first revision written before
    /// revisions were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// The API key that made a human revision (none when keys are off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The translator's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A chunk's review state as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkReview {
    /// Every revision, oldest first; empty until the first edit (the one
    /// revision is then the engine's output, see [`revisions_of`]).
    pub revisions: Vec<Revision>,
    /// The current revision's number (0 until the first edit: revision 1).
    pub current: u32,
    /// A person marked the current text reviewed.
    pub reviewed: bool,
    /// Raised by every change of the current text or the reviewed flag.
    pub version: u32,
}

/// A job's review counts as stored with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReviewCounts {
    /// Chunks marked reviewed.
    pub reviewed: u32,
    /// Edits that changed a chunk's current text: while 0 the stored
    /// result is the chunks' text, otherwise the result is assembled again
    /// from the chunks.
    pub edits: u32,
}

/// What describes an engine revision: the engine and model that made it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineLabel {
    /// The engine.
    pub engine: String,
    /// The model.
    pub model: Option<String>,
}

/// Whether `text` has a control character other than tab and line breaks.
fn has_control(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// What a revision list takes in a store, encoded, with the current text
/// kept beside it (bounded by [`MAX_TOTAL_BYTES`] so a DynamoDB chunk item
/// stays under its 400 KB).
fn stored_size(revisions: &[Revision]) -> usize {
    let longest = revisions.iter().map(|r| r.text.len()).max().unwrap_or(0);
    encode(revisions).map_or(0, |e| e.len()) + longest
}

/// Encode a revision list for a store (JSON); `None` for an empty one.
pub fn encode(revisions: &[Revision]) -> Option<String> {
    if revisions.is_empty() {
        return None;
    }
    serde_json::to_string(revisions).ok()
}

/// Decode a stored revision list (`Err` names what did not parse).
pub fn decode(text: &str) -> Result<Vec<Revision>, String> {
    serde_json::from_str(text).map_err(|e| format!("chunk revisions: {e}"))
}

/// A chunk's revisions as clients see them: the stored ones, or the
/// engine's output as revision 1 when none is stored.
pub fn revisions_of(chunk: &ChunkRecord, label: &EngineLabel) -> Vec<Revision> {
    if !chunk.review.revisions.is_empty() {
        return chunk.review.revisions.clone();
    }
    match (&chunk.translation, chunk.status) {
        (Some(text), ChunkStatus::Completed) => vec![Revision {
            n: 1,
            text: text.clone(),
            origin: Origin::Engine,
            engine: Some(if chunk.from_memory {
                "memory".to_owned()
            } else {
                label.engine.clone()
            }),
            model: (!chunk.from_memory).then(|| label.model.clone()).flatten(),
            at: None,
            key_id: None,
            note: None,
        }],
        _ => Vec::new(),
    }
}

/// The current revision's number (1 before the first edit).
pub fn current_of(chunk: &ChunkRecord) -> u32 {
    chunk.review.current.max(1)
}

/// The chunk's entity tag: its index, version and a digest of its current
/// text, quoted as HTTP wants it.
pub fn etag(chunk: &ChunkRecord) -> String {
    let text = chunk.translation.as_deref().unwrap_or("");
    let digest = crate::digest::sha256_hex(text.as_bytes());
    let state = match chunk.status {
        ChunkStatus::Completed => "t",
        ChunkStatus::Pending => "p",
        ChunkStatus::Failed => "f",
    };
    format!(
        "\"{}-{}{}-{}\"",
        chunk.index,
        state,
        chunk.review.version,
        &digest[..12]
    )
}

/// Whether an `If-Match` header value names `etag` (a list of tags, a weak
/// tag compared by its value, or `*` for any current representation).
pub fn if_match_holds(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
    })
}

/// What a client asks of a chunk's translation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EditRequest {
    /// A new text (a human revision), or an existing revision's text
    /// (which makes that one current).
    pub text: Option<String>,
    /// A note kept with a new revision.
    pub note: Option<String>,
    /// Mark reviewed (or not).
    pub reviewed: Option<bool>,
    /// Make revision `n` current.
    pub revision: Option<u32>,
}

/// Who asks, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Editor {
    /// The caller's key, when keys are on.
    pub key_id: Option<String>,
    /// Now.
    pub at: DateTime<Utc>,
}

/// A planned change of one chunk, written by a store only if the chunk is
/// still completed at `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkEdit {
    /// The chunk.
    pub index: u32,
    /// The version read (the write's condition, with `revisions_before`).
    pub version: u32,
    /// How many revisions the chunk stored when read.
    pub revisions_before: u32,
    /// Raise the version: the current text or the reviewed flag changes.
    pub bump: bool,
    /// The current text afterwards.
    pub translation: String,
    /// Every revision afterwards.
    pub revisions: Vec<Revision>,
    /// The current revision afterwards.
    pub current: u32,
    /// Reviewed afterwards.
    pub reviewed: bool,
    /// The job's reviewed count changes by this much (−1, 0 or 1).
    pub reviewed_delta: i32,
    /// The current text changed.
    pub text_changed: bool,
}

impl ChunkEdit {
    /// The chunk as it is once the edit is written.
    pub fn applied_to(&self, chunk: &ChunkRecord) -> ChunkRecord {
        let mut c = chunk.clone();
        c.translation = Some(self.translation.clone());
        c.review = ChunkReview {
            revisions: self.revisions.clone(),
            current: self.current,
            reviewed: self.reviewed,
            version: self.version + u32::from(self.bump),
        };
        c
    }
}

/// Why an edit cannot be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EditError {
    /// The chunk has no translation yet.
    #[error("chunk {0} is not translated yet; it can be corrected once it is")]
    NotTranslated(u32),
    /// The request asks for nothing, or for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The chunk keeps as many revisions as it may.
    #[error("{0}")]
    Full(String),
}

/// Plan `request` on `chunk` (as read), describing its first revision by
/// `label` when it has none stored.
pub fn plan(
    chunk: &ChunkRecord,
    request: &EditRequest,
    label: &EngineLabel,
    editor: &Editor,
) -> Result<ChunkEdit, EditError> {
    let (Some(current_text), ChunkStatus::Completed) = (&chunk.translation, chunk.status) else {
        return Err(EditError::NotTranslated(chunk.index));
    };
    if request.note.is_some() && request.text.is_none() {
        return Err(EditError::Invalid("'note' goes with a new 'text'".into()));
    }
    if request.text.is_none() && request.reviewed.is_none() && request.revision.is_none() {
        return Err(EditError::Invalid(
            "give 'text' (a new translation), 'revision' (the number of one to make current) or 'reviewed'".into(),
        ));
    }
    if request.text.is_some() && request.revision.is_some() {
        return Err(EditError::Invalid(
            "give either 'text' or 'revision', not both".into(),
        ));
    }
    let note = match &request.note {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => {
            return Err(EditError::Invalid(format!(
                "note: at most {MAX_NOTE_CHARS} characters"
            )));
        }
        Some(n) if n.trim().is_empty() => None,
        Some(n) if has_control(n) => {
            return Err(EditError::Invalid(
                "note: no control characters other than tab and line breaks".into(),
            ));
        }
        Some(n) => Some(n.trim().to_owned()),
        None => None,
    };
    let mut revisions = revisions_of(chunk, label);
    let mut current = current_of(chunk);
    if let Some(text) = &request.text {
        if text.trim().is_empty() {
            return Err(EditError::Invalid(
                "text: a translation cannot be empty".into(),
            ));
        }
        if text.len() > MAX_TEXT_BYTES {
            return Err(EditError::Invalid(format!(
                "text: at most {MAX_TEXT_BYTES} bytes; this one has {}",
                text.len()
            )));
        }
        if has_control(text) {
            return Err(EditError::Invalid(
                "text: no control characters other than tab and line breaks".into(),
            ));
        }
        // The text of a revision it already has makes that one current;
        // anything else is a new human revision.
        match revisions.iter().find(|r| r.text == *text && note.is_none()) {
            Some(r) => current = r.n,
            None => {
                if revisions.len() >= MAX_REVISIONS {
                    return Err(EditError::Full(format!(
                        "chunk {} keeps {MAX_REVISIONS} revisions, the most it may; make one of them current with {{\"revision\": n}}",
                        chunk.index
                    )));
                }
                let n = revisions.last().map_or(1, |r| r.n + 1);
                revisions.push(Revision {
                    n,
                    text: text.clone(),
                    origin: Origin::Human,
                    engine: None,
                    model: None,
                    at: Some(editor.at),
                    key_id: editor.key_id.clone(),
                    note,
                });
                let stored = stored_size(&revisions);
                if stored > MAX_TOTAL_BYTES {
                    return Err(EditError::Full(format!(
                        "chunk {}'s revisions would take {stored} bytes with this one, more than the {MAX_TOTAL_BYTES} a chunk keeps; make one of them current with {{\"revision\": n}}",
                        chunk.index
                    )));
                }
                current = n;
            }
        }
    }
    if let Some(n) = request.revision {
        if !revisions.iter().any(|r| r.n == n) {
            return Err(EditError::Invalid(format!(
                "revision: chunk {} has revisions 1 to {}; there is no revision {n}",
                chunk.index,
                revisions.last().map_or(1, |r| r.n)
            )));
        }
        current = n;
    }
    let translation = revisions
        .iter()
        .find(|r| r.n == current)
        .map(|r| r.text.clone())
        .unwrap_or_else(|| current_text.clone());
    let text_changed = translation != *current_text;
    // A new text is a new thing to review: it is reviewed only when the
    // same request says so.
    let reviewed = match request.reviewed {
        Some(r) => r,
        None if text_changed => false,
        None => chunk.review.reviewed,
    };
    let reviewed_delta = i32::from(reviewed) - i32::from(chunk.review.reviewed);
    Ok(ChunkEdit {
        index: chunk.index,
        version: chunk.review.version,
        revisions_before: chunk.review.revisions.len() as u32,
        bump: text_changed || reviewed_delta != 0,
        translation,
        revisions,
        current,
        reviewed,
        reviewed_delta,
        text_changed,
    })
}

/// Keep an engine revision made by re-translating a chunk beside the
/// others, without changing the current one; `None` when the chunk is not
/// translated, keeps as many revisions as it may, or already has this
/// engine text.
pub fn engine_revision(
    chunk: &ChunkRecord,
    text: &str,
    made_by: &EngineLabel,
    first: &EngineLabel,
    at: DateTime<Utc>,
) -> Option<ChunkEdit> {
    let (Some(current), ChunkStatus::Completed) = (&chunk.translation, chunk.status) else {
        return None;
    };
    let mut revisions = revisions_of(chunk, first);
    if revisions.len() >= MAX_REVISIONS
        || revisions
            .iter()
            .any(|r| r.text == text && r.origin == Origin::Engine)
    {
        return None;
    }
    let n = revisions.last().map_or(1, |r| r.n + 1);
    revisions.push(Revision {
        n,
        text: text.to_owned(),
        origin: Origin::Engine,
        engine: Some(made_by.engine.clone()),
        model: made_by.model.clone(),
        at: Some(at),
        key_id: None,
        note: None,
    });
    if stored_size(&revisions) > MAX_TOTAL_BYTES {
        return None;
    }
    Some(ChunkEdit {
        index: chunk.index,
        version: chunk.review.version,
        revisions_before: chunk.review.revisions.len() as u32,
        bump: false,
        translation: current.clone(),
        revisions,
        current: current_of(chunk),
        reviewed: chunk.review.reviewed,
        reviewed_delta: 0,
        text_changed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: Option<&str>) -> ChunkRecord {
        ChunkRecord {
            index: 2,
            source: "ཀ།".into(),
            status: if text.is_some() {
                ChunkStatus::Completed
            } else {
                ChunkStatus::Pending
            },
            provider_calls: 1,
            translation: text.map(str::to_owned),
            error: None,
            duration_ms: Some(5),
            run: 1,
            confidence: None,
            from_memory: false,
            context: None,
            warning: None,
            usage: crate::usage::Usage::default(),
            review: ChunkReview::default(),
            examples: None,
        }
    }

    fn label() -> EngineLabel {
        EngineLabel {
            engine: "openai".into(),
            model: Some("m".into()),
        }
    }

    fn editor() -> Editor {
        Editor {
            key_id: Some("k1".into()),
            at: chrono::Utc::now(),
        }
    }

    fn text(t: &str) -> EditRequest {
        EditRequest {
            text: Some(t.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_first_edit_keeps_the_engine_output_as_revision_one() {
        let c = chunk(Some("Engine text."));
        let mut req = text("Human text.");
        req.note = Some(" better ".into());
        let e = plan(&c, &req, &label(), &editor()).expect("plan");
        assert_eq!(e.revisions.len(), 2);
        assert_eq!(e.revisions[0].origin, Origin::Engine);
        assert_eq!(e.revisions[0].engine.as_deref(), Some("openai"));
        assert_eq!(e.revisions[0].text, "Engine text.");
        assert_eq!(e.revisions[1].origin, Origin::Human);
        assert_eq!(e.revisions[1].key_id.as_deref(), Some("k1"));
        assert_eq!(e.revisions[1].note.as_deref(), Some("better"));
        assert_eq!((e.current, e.translation.as_str()), (2, "Human text."));
        assert!(e.text_changed);
        assert_eq!((e.version, e.reviewed, e.reviewed_delta), (0, false, 0));
        assert_eq!((e.revisions_before, e.bump), (0, true));
        let after = e.applied_to(&c);
        assert_eq!(after.review.version, 1);
        assert_ne!(etag(&after), etag(&c), "an edit changes the tag");
    }

    #[test]
    fn choosing_a_revision_by_number_or_by_its_text() {
        let c = chunk(Some("Engine text."));
        let c = plan(&c, &text("Human text."), &label(), &editor())
            .expect("plan")
            .applied_to(&c);
        let back = EditRequest {
            revision: Some(1),
            ..Default::default()
        };
        let e = plan(&c, &back, &label(), &editor()).expect("plan");
        assert_eq!((e.current, e.translation.as_str()), (1, "Engine text."));
        assert_eq!(e.revisions.len(), 2, "choosing adds no revision");
        let e = plan(&c, &text("Engine text."), &label(), &editor()).expect("plan");
        assert_eq!((e.current, e.revisions.len()), (1, 2));
        let none = EditRequest {
            revision: Some(9),
            ..Default::default()
        };
        assert!(matches!(
            plan(&c, &none, &label(), &editor()),
            Err(EditError::Invalid(m)) if m.contains("no revision 9")
        ));
    }

    #[test]
    fn reviewed_follows_the_request_and_a_new_text_clears_it() {
        let c = chunk(Some("Engine text."));
        let mark = EditRequest {
            reviewed: Some(true),
            ..Default::default()
        };
        let e = plan(&c, &mark, &label(), &editor()).expect("plan");
        assert_eq!(
            (e.reviewed, e.reviewed_delta, e.text_changed),
            (true, 1, false)
        );
        assert!(e.revisions.len() == 1, "marking keeps the revisions");
        let c = e.applied_to(&c);
        let e = plan(&c, &text("New."), &label(), &editor()).expect("plan");
        assert_eq!((e.reviewed, e.reviewed_delta), (false, -1));
        let mut both = text("New.");
        both.reviewed = Some(true);
        let e = plan(&c, &both, &label(), &editor()).expect("plan");
        assert_eq!((e.reviewed, e.reviewed_delta), (true, 0));
    }

    #[test]
    fn bad_requests_are_refused() {
        let c = chunk(Some("x"));
        let cases: Vec<(EditRequest, &str)> = vec![
            (EditRequest::default(), "give 'text'"),
            (text("  "), "cannot be empty"),
            (text("a\u{1}b"), "control characters"),
            (text(&"a".repeat(MAX_TEXT_BYTES + 1)), "at most"),
            (
                EditRequest {
                    text: Some("a".into()),
                    revision: Some(1),
                    ..Default::default()
                },
                "not both",
            ),
            (
                EditRequest {
                    note: Some("n".into()),
                    ..Default::default()
                },
                "'note' goes with",
            ),
        ];
        for (req, want) in cases {
            match plan(&c, &req, &label(), &editor()) {
                Err(EditError::Invalid(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{req:?}: {other:?}"),
            }
        }
        assert_eq!(
            plan(&chunk(None), &text("a"), &label(), &editor()),
            Err(EditError::NotTranslated(2))
        );
    }

    #[test]
    fn a_chunk_keeps_a_bounded_number_of_revisions() {
        let mut c = chunk(Some("0"));
        for i in 1..MAX_REVISIONS {
            c = plan(&c, &text(&i.to_string()), &label(), &editor())
                .expect("plan")
                .applied_to(&c);
        }
        assert_eq!(c.review.revisions.len(), MAX_REVISIONS);
        assert!(matches!(
            plan(&c, &text("more"), &label(), &editor()),
            Err(EditError::Full(_))
        ));
        // An existing text is still a choice.
        assert!(plan(&c, &text("3"), &label(), &editor()).is_ok());
        // The stored size is bounded too, escapes counted.
        let mut c = chunk(Some("0"));
        let big = "\"".repeat(MAX_TEXT_BYTES / 2);
        let mut kept = 0;
        loop {
            let t = format!("{kept}{big}");
            match plan(&c, &text(&t), &label(), &editor()) {
                Ok(e) => {
                    c = e.applied_to(&c);
                    kept += 1;
                }
                Err(EditError::Full(m)) => {
                    assert!(m.contains("bytes"), "{m}");
                    break;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!((1..MAX_REVISIONS).contains(&kept), "{kept} large revisions");
        assert!(stored_size(&c.review.revisions) <= MAX_TOTAL_BYTES);
        assert!(
            engine_revision(
                &c,
                &format!("x{big}"),
                &label(),
                &label(),
                chrono::Utc::now()
            )
            .is_none(),
            "an engine revision past the bound is not kept"
        );
    }

    #[test]
    fn if_match_compares_tags() {
        let c = chunk(Some("x"));
        let tag = etag(&c);
        assert!(if_match_holds(&tag, &tag));
        assert!(if_match_holds(&format!("W/{tag}"), &tag));
        assert!(if_match_holds(&format!("\"other\", {tag}"), &tag));
        assert!(if_match_holds("*", &tag));
        assert!(!if_match_holds("\"2-t0-000000000000\"", &tag));
        let mut other = c.clone();
        other.index = 3;
        assert_ne!(etag(&other), tag, "tags differ between chunks");
    }

    #[test]
    fn stored_revisions_round_trip() {
        let c = chunk(Some("E"));
        let e = plan(&c, &text("H"), &label(), &editor()).expect("plan");
        let stored = encode(&e.revisions).expect("json");
        assert_eq!(decode(&stored).expect("decode"), e.revisions);
        assert_eq!(encode(&[]), None);
        assert!(decode("[{").is_err());
    }

    #[test]
    fn engine_revisions_sit_beside_the_others() {
        let c = chunk(Some("E"));
        let other = EngineLabel {
            engine: "bedrock".into(),
            model: Some("claude".into()),
        };
        let e = engine_revision(&c, "B", &other, &label(), chrono::Utc::now()).expect("added");
        let revs = &e.revisions;
        assert_eq!(revs.len(), 2);
        assert_eq!(revs[1].engine.as_deref(), Some("bedrock"));
        assert_eq!(revs[1].origin, Origin::Engine);
        assert_eq!((e.current, e.translation.as_str(), e.bump), (1, "E", false));
        assert_eq!(e.applied_to(&c).review.version, 0, "the tag stays");
        assert!(
            engine_revision(&c, "E", &label(), &label(), chrono::Utc::now()).is_none(),
            "the same engine text again adds nothing"
        );
        assert!(engine_revision(&chunk(None), "B", &other, &label(), chrono::Utc::now()).is_none());
    }
}
