//! The per-chunk ledger: what each chunk of a job is, and how a job's output
//! is assembled from it.

use serde::{Deserialize, Serialize};

/// Where one chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkStatus {
    /// Not yet translated (or to be translated again after a failure).
    Pending,
    /// Translated and committed; never translated again.
    Completed,
    /// Gave up on it; the job failed with it.
    Failed,
}

impl ChunkStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkStatus::Pending => "pending",
            ChunkStatus::Completed => "completed",
            ChunkStatus::Failed => "failed",
        }
    }
    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ChunkStatus::Pending),
            "completed" => Some(ChunkStatus::Completed),
            "failed" => Some(ChunkStatus::Failed),
            _ => None,
        }
    }
}

/// One chunk of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    /// Position in the job, from 0.
    pub index: u32,
    /// Source text of the chunk.
    pub source: String,
    /// Status.
    pub status: ChunkStatus,
    /// Provider calls made for it so far, over all runs.
    pub provider_calls: u32,
    /// Output, once completed.
    pub translation: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// Time the successful attempt took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// The job run (its `run` value) in which it completed.
    pub run: u32,
    /// The engine's confidence, when it has one.
    pub confidence: Option<f64>,
    /// Served from the translation memory.
    pub from_memory: bool,
    /// Context given to the engine (JSON), kept so a resumed job reuses it.
    pub context: Option<String>,
    /// What the quality checks flagged.
    pub warning: Option<String>,
    /// Provider calls and tokens of its committed attempt.
    pub usage: crate::usage::Usage,
    /// Its revisions, current revision, reviewed flag and version.
    pub review: crate::review::ChunkReview,
    /// The examples from the tenant's memory its engine was given (JSON).
    pub examples: Option<String>,
}

/// Split `s` into (leading whitespace, body, trailing whitespace).
fn whitespace_frame(s: &str) -> (&str, &str) {
    let body_start = s.len() - s.trim_start().len();
    let body_end = s.trim_end().len().max(body_start);
    (&s[..body_start], &s[body_end..])
}

/// Append one chunk's output to `out`, keeping the source chunk's own leading
/// and trailing whitespace (line breaks, blank lines) around the translation,
/// so the output keeps the source's layout and an identity engine gives back
/// the input exactly.
pub fn append_output(out: &mut String, source: &str, translation: &str) {
    let (lead, trail) = whitespace_frame(source);
    let body = translation.trim();
    out.push_str(lead);
    out.push_str(body);
    if body.is_empty() {
        return;
    }
    let tibetan_end = body
        .chars()
        .last()
        .is_some_and(|c| ('\u{0F00}'..='\u{0FFF}').contains(&c));
    if trail.is_empty() && !tibetan_end {
        // English output of chunks split inside a line needs a word break;
        // Tibetan-script output (split after a tsheg) does not.
        out.push(' ');
    } else {
        out.push_str(trail);
    }
}

/// The output of the chunks translated so far (the leading run of chunks
/// that have a translation), for a job that is not completed.
pub fn partial_output(ledger: &[ChunkRecord]) -> String {
    let mut out = String::new();
    for c in ledger.iter().take_while(|c| c.translation.is_some()) {
        append_output(&mut out, &c.source, c.translation.as_deref().unwrap_or(""));
    }
    out.trim_end().to_owned()
}

/// Assemble the translations of `(source, translation)` pairs, in order.
pub fn assemble<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    let mut last_was_space = false;
    for (source, translation) in pairs {
        append_output(&mut out, source, translation);
        last_was_space = out.ends_with(' ') && !source.ends_with(' ');
    }
    if last_was_space {
        out.pop();
    }
    out
}

/// What separates the pages of a document's source (a form feed, as PDF
/// input is stored).
pub const PAGE_BREAK: char = '\u{000C}';

/// The page each chunk starts on, from 1, for a source whose pages are
/// separated by form feeds (U+000C, as PDF input is stored); `None` when
/// the source has no page breaks.
pub fn source_pages<'a>(sources: impl IntoIterator<Item = &'a str>) -> Option<Vec<u32>> {
    let mut pages = Vec::new();
    let mut breaks = 0u32;
    let mut any = false;
    for source in sources {
        let lead = source.len() - source.trim_start().len();
        let before = source[..lead].matches(PAGE_BREAK).count() as u32;
        let all = source.matches(PAGE_BREAK).count() as u32;
        any |= all > 0;
        pages.push(1 + breaks + before);
        breaks += all;
    }
    any.then_some(pages)
}

/// A translation with a `[page N]` line before the first chunk that starts
/// on each new page (`pages` from [`source_pages`]); form feeds are left out.
pub fn assemble_with_pages<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    pages: &[u32],
) -> String {
    let mut out = String::new();
    let mut last = 0u32;
    for (i, (source, translation)) in pairs.into_iter().enumerate() {
        let page = pages.get(i).copied().unwrap_or(last);
        if page != last {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[page {page}]\n"));
            last = page;
        }
        let source = source.replace(PAGE_BREAK, "");
        let start = out.len();
        append_output(&mut out, &source, translation);
        // Right after a marker, a chunk's leading layout is not wanted.
        if out[..start].ends_with("]\n") {
            let body = out[start..].trim_start().to_owned();
            out.truncate(start);
            out.push_str(&body);
        }
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_translations_give_back_the_source() {
        let src = ["༄༅། །ཀ་ཁ། །\n", "ག་ང།\n\n", "ཅ་ཆ། "];
        let out = assemble(src.iter().map(|s| (*s, *s)));
        assert_eq!(out, src.concat());
    }

    #[test]
    fn identity_holds_for_chunks_split_at_tshegs() {
        let src = ["བྱང་ཆུབ་སེམས་", "དཔའི་སྤྱོད་པ།"];
        let out = assemble(src.iter().map(|s| (*s, *s)));
        assert_eq!(out, src.concat());
    }

    #[test]
    fn pages_of_chunks_and_markers() {
        let src = ["ཀ་ཁ།\n", "ག་ང།\n\u{000C}", "ཅ་ཆ།\n\u{000C}\u{000C}", "ཇ།\n"];
        let pages = source_pages(src).expect("pages");
        assert_eq!(pages, [1, 1, 2, 4]);
        assert_eq!(source_pages(["ཀ།\n", "ཁ།"]), None);
        let pairs = src
            .iter()
            .zip(["A.", "B.", "C.", "D."])
            .map(|(s, t)| (*s, t));
        assert_eq!(
            assemble_with_pages(pairs, &pages),
            "[page 1]\nA.\nB.\n\n[page 2]\nC.\n\n[page 4]\nD."
        );
    }

    #[test]
    fn layout_is_kept_around_translations() {
        let pairs = [("ཀ་ཁ།\n\n", " A B "), ("ག་ང", "C D"), ("ཅ་ཆ", "E")];
        assert_eq!(assemble(pairs), "A B\n\nC D E");
    }
}
