//! Exchanging a job's bilingual text with CAT tools: TMX 1.4b and XLIFF 2.1
//! out, a printable side-by-side HTML page, and XLIFF 2 and TMX back in (and
//! TBX, for glossaries).
//!
//! Text survives a write and a read exactly: whitespace, line breaks, the
//! markup characters `& < > " '` and Tibetan. Every XLIFF `<source>` and
//! `<target>` says `xml:space="preserve"`; a carriage return is written as
//! `&#13;`, because XML turns a raw one into a line feed; and the readers keep
//! every character of a text, whatever `xml:space` says, since a tool that
//! drops the attribute must not reflow a translation. The one loss: the
//! characters XML 1.0 cannot carry at all (the C0 controls other than tab,
//! line feed and carriage return, and U+FFFE, U+FFFF) are written as U+FFFD
//! REPLACEMENT CHARACTER, so that every document written is well-formed.
//!
//! The readers expand no entity: a DOCTYPE with an internal subset (where
//! entities are declared) is refused, so are references to undeclared
//! entities, and no external DTD is ever fetched (XLIFF 2 has no DTD, so any
//! DOCTYPE is refused there; TMX and TBX tools write a bare one, which is
//! skipped). They bound the units they return, so a file's size, not its
//! shape, is all a caller has to limit.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

/// The namespace of XLIFF 2.0 and 2.1 documents.
pub const XLIFF2_NS: &str = "urn:oasis:names:tc:xliff:document:2.0";
/// The namespace of XLIFF 2.2 documents, whose core is 2.0's.
const XLIFF22_NS: &str = "urn:oasis:names:tc:xliff:document:2.2";

/// The state of a segment, as XLIFF 2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Not translated yet, or a draft.
    Initial,
    /// Translated.
    Translated,
    /// Translated and reviewed.
    Reviewed,
    /// Done: not to be changed.
    Final,
}

impl SegmentState {
    /// The XLIFF 2 name.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Initial => "initial",
            SegmentState::Translated => "translated",
            SegmentState::Reviewed => "reviewed",
            SegmentState::Final => "final",
        }
    }

    /// Parse an XLIFF 2 name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "initial" => Some(SegmentState::Initial),
            "translated" => Some(SegmentState::Translated),
            "reviewed" => Some(SegmentState::Reviewed),
            "final" => Some(SegmentState::Final),
            _ => None,
        }
    }
}

/// One chunk of a job as exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Position in the job, from 0.
    pub index: u32,
    /// Tibetan.
    pub source: String,
    /// English, once translated.
    pub target: Option<String>,
    /// Where the chunk is.
    pub state: SegmentState,
    /// A remark for the translator or reviewer.
    pub note: Option<String>,
}

/// A unit read back from an XLIFF 2 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUnit {
    /// The unit's `id` (see [`unit_index`]).
    pub id: String,
    /// The text of its sources.
    pub source: String,
    /// The text of its targets, when it has any.
    pub target: Option<String>,
    /// The `state` of its first segment, when that is an XLIFF 2 state.
    pub state: Option<SegmentState>,
}

/// Why a file could not be read; the message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExchangeError(pub String);

/// The unit id of chunk `index`.
pub fn unit_id(index: u32) -> String {
    format!("c{index}")
}

/// The chunk a unit id names: only what [`unit_id`] writes (`c0`, `c17`),
/// so that two ids never name the same chunk.
pub fn unit_index(id: &str) -> Option<u32> {
    let digits = id.strip_prefix('c')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse().ok()
}

// ---------------------------------------------------------------- writers

/// True when XML 1.0 allows `c` in a document.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Append `s` escaped as XML character data, or with `attr` as the value of
/// a double-quoted attribute. A character XML cannot carry becomes U+FFFD.
fn push_xml(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            // Not required in general, but `]]>` may not appear in text.
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            // A raw CR is read back as LF (line-end normalization).
            '\r' => out.push_str("&#13;"),
            // Attribute-value normalization turns raw ones into spaces.
            '\t' if attr => out.push_str("&#9;"),
            '\n' if attr => out.push_str("&#10;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// `s` escaped as XML character data.
fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_xml(&mut out, s, false);
    out
}

/// `s` escaped as a double-quoted XML attribute value.
fn xml_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_xml(&mut out, s, true);
    out
}

/// The TMX date of `t`: `YYYYMMDDThhmmssZ`.
fn tmx_date(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A TMX 1.4b translation memory of the translated segments: one `<tu>`
/// (its `tuid` the chunk index) per segment that has a target, with its
/// note, Tibetan (`bo`) and English (`en`). Segments without a target are
/// left out, as a memory holds only pairs.
pub fn tmx(segments: &[Segment], tool_version: &str, created: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(
        512 + segments
            .iter()
            .map(|s| s.source.len() + s.target.as_ref().map_or(0, String::len) + 128)
            .sum::<usize>(),
    );
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tmx version=\"1.4\">\n");
    let _ = writeln!(
        out,
        "  <header creationtool=\"Lotsawa\" creationtoolversion=\"{}\" datatype=\"plaintext\" \
         segtype=\"paragraph\" adminlang=\"en\" srclang=\"bo\" o-tmf=\"lotsawa\" \
         creationdate=\"{}\"/>",
        xml_attr(tool_version),
        tmx_date(created),
    );
    out.push_str("  <body>\n");
    for s in segments {
        let Some(target) = &s.target else { continue };
        let _ = writeln!(out, "    <tu tuid=\"{}\">", s.index);
        if let Some(note) = &s.note {
            // The DTD puts notes before the variants.
            let _ = writeln!(out, "      <note>{}</note>", xml_text(note));
        }
        let _ = writeln!(
            out,
            "      <tuv xml:lang=\"bo\"><seg>{}</seg></tuv>",
            xml_text(&s.source)
        );
        let _ = writeln!(
            out,
            "      <tuv xml:lang=\"en\"><seg>{}</seg></tuv>",
            xml_text(target)
        );
        out.push_str("    </tu>\n");
    }
    out.push_str("  </body>\n</tmx>\n");
    out
}

/// `s` as an XML NMTOKEN (what XLIFF 2 requires of a file id): characters
/// outside names become `_`, and an empty id becomes `f1`.
fn nmtoken(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "f1".to_owned() } else { t }
}

/// An XLIFF 2.1 document (Tibetan `bo` to English `en`) with one `<file>`
/// (its id `file_id`, made an NMTOKEN) and one `<unit id="c{index}">` per
/// segment, holding its note and one `<segment>` with the state, the source
/// and, when there is one, the target. XLIFF requires at least one unit in a
/// file, so a job without segments gives a document strict tools may refuse.
pub fn xliff(file_id: &str, segments: &[Segment]) -> String {
    let mut out = String::with_capacity(
        512 + segments
            .iter()
            .map(|s| s.source.len() + s.target.as_ref().map_or(0, String::len) + 256)
            .sum::<usize>(),
    );
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<xliff xmlns=\"{XLIFF2_NS}\" version=\"2.1\" srcLang=\"bo\" trgLang=\"en\">"
    );
    let _ = writeln!(out, "  <file id=\"{}\">", xml_attr(&nmtoken(file_id)));
    for s in segments {
        let _ = writeln!(out, "    <unit id=\"{}\">", unit_id(s.index));
        if let Some(note) = &s.note {
            // Notes belong to the unit and come before its segments.
            let _ = writeln!(
                out,
                "      <notes>\n        <note>{}</note>\n      </notes>",
                xml_text(note)
            );
        }
        let _ = writeln!(out, "      <segment state=\"{}\">", s.state.as_str());
        let _ = writeln!(
            out,
            "        <source xml:space=\"preserve\">{}</source>",
            xml_text(&s.source)
        );
        if let Some(target) = &s.target {
            let _ = writeln!(
                out,
                "        <target xml:space=\"preserve\">{}</target>",
                xml_text(target)
            );
        }
        out.push_str("      </segment>\n    </unit>\n");
    }
    out.push_str("  </file>\n</xliff>\n");
    out
}

/// `s` escaped as HTML text or a double-quoted attribute value; a character
/// XML cannot carry becomes U+FFFD, as in the XML writers.
fn html_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// The page's style: a two-column table that keeps each text's line breaks,
/// a Tibetan font stack, and print rules (header row repeated on every
/// page, no row split across pages, greys made black).
const HTML_STYLE: &str = "\
:root { color-scheme: light; }
body { margin: 2rem auto; max-width: 64rem; padding: 0 1rem; color: #111; background: #fff;
  font-family: Georgia, \"Times New Roman\", serif; line-height: 1.5; }
h1 { font-size: 1.4rem; font-weight: normal; margin: 0 0 1.5rem; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
col.n { width: 4.5rem; }
th { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #999; color: #666;
  font: 600 .75rem system-ui, sans-serif; letter-spacing: .05em; text-transform: uppercase; }
td { vertical-align: top; padding: .6rem .5rem; border-bottom: 1px solid #ddd;
  white-space: pre-wrap; overflow-wrap: anywhere; }
td.n { white-space: normal; color: #888; font: .8rem system-ui, sans-serif; }
td.n .state { display: block; font-size: .65rem; color: #aaa; }
td[lang=\"bo\"] { font-family: \"Noto Serif Tibetan\", Jomolhari, \"Microsoft Himalaya\", Kailasa, serif;
  font-size: 1.25rem; line-height: 1.8; }
.missing { color: #aaa; }
.note { display: block; margin-top: .4rem; color: #555; font-size: .8rem; font-style: italic; }
@media print {
  @page { margin: 1.5cm; }
  body { margin: 0; padding: 0; max-width: none; font-size: 10.5pt; }
  thead { display: table-header-group; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  th, td.n, td.n .state, .note { color: #000; }
  td { border-bottom-color: #bbb; }
}
";

/// A printable bilingual page: a complete UTF-8 HTML document with a table
/// of one row per segment, its chunk number and (small, grey) state, the
/// Tibetan on the left (`lang="bo"`) and the English on the right
/// (`lang="en"`, a dash when untranslated) with the note under it. Every
/// text is escaped and keeps its line breaks.
pub fn html(title: &str, segments: &[Segment]) -> String {
    let title = html_text(title);
    let mut out = String::with_capacity(
        4096 + segments
            .iter()
            .map(|s| s.source.len() + s.target.as_ref().map_or(0, String::len) + 192)
            .sum::<usize>(),
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"Lotsawa\">\n<title>{title}</title>\n\
         <style>\n{HTML_STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <table>\n<colgroup><col class=\"n\"><col><col></colgroup>\n\
         <thead><tr><th>#</th><th>Tibetan</th><th>English</th></tr></thead>\n<tbody>\n"
    );
    for s in segments {
        let state = s.state.as_str();
        // No whitespace inside the cells: they keep it (pre-wrap).
        let _ = write!(
            out,
            "<tr class=\"s-{state}\"><td class=\"n\">{}<span class=\"state\">{state}</span></td>\
             <td lang=\"bo\">{}</td><td lang=\"en\">",
            s.index,
            html_text(&s.source),
        );
        match &s.target {
            Some(t) => out.push_str(&html_text(t)),
            None => out.push_str("<span class=\"missing\">\u{2014}</span>"),
        }
        if let Some(note) = &s.note {
            let _ = write!(out, "<span class=\"note\">{}</span>", html_text(note));
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

// ---------------------------------------------------------------- readers

/// One step of a document, as the readers need it.
enum Item<'a> {
    /// An element opens (`empty`: and closes at once).
    Open {
        /// Its local name.
        name: String,
        /// In the namespace the reader looks for.
        ours: bool,
        /// The tag, for its attributes.
        tag: BytesStart<'a>,
        /// `<x/>`.
        empty: bool,
    },
    /// The innermost open element closes.
    Close,
    /// Character data, references resolved.
    Text(Cow<'a, str>),
    /// The end of the document.
    End,
}

/// A pull parser over a whole document that refuses what the readers
/// refuse, and says on which line.
struct Xml<'a> {
    text: &'a str,
    reader: NsReader<&'a [u8]>,
    /// The namespaces `Item::Open::ours` is about.
    namespaces: &'static [&'static str],
    /// Skip `<!DOCTYPE x SYSTEM "x.dtd">` (no internal subset): TMX and TBX
    /// tools (translate-toolkit among them) write one; it is never fetched.
    external_dtd: bool,
    /// Where the last item began.
    pos: u64,
}

impl<'a> Xml<'a> {
    /// A parser over `text`.
    fn new(text: &'a str, namespaces: &'static [&'static str], external_dtd: bool) -> Self {
        Self {
            text,
            reader: NsReader::from_str(text),
            namespaces,
            external_dtd,
            pos: 0,
        }
    }

    /// The 1-based line of byte `pos`.
    fn line_at(&self, pos: u64) -> usize {
        let end = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// An error at the last item.
    fn error(&self, message: impl std::fmt::Display) -> ExchangeError {
        ExchangeError(format!("line {}: {message}", self.line_at(self.pos)))
    }

    /// The next item.
    fn next(&mut self) -> Result<Item<'a>, ExchangeError> {
        loop {
            self.pos = self.reader.buffer_position();
            let (ours, event) = match self.reader.read_resolved_event() {
                Ok((ResolveResult::Bound(Namespace(ns)), event)) => {
                    (self.namespaces.contains(&ns), event)
                }
                Ok((_, event)) => (false, event),
                Err(e) => {
                    let line = self.line_at(self.reader.error_position());
                    return Err(ExchangeError(format!(
                        "line {line}: not well-formed XML: {e}"
                    )));
                }
            };
            return Ok(match event {
                Event::Start(tag) => Item::Open {
                    name: tag.local_name().into_inner().to_owned(),
                    ours,
                    tag,
                    empty: false,
                },
                Event::Empty(tag) => Item::Open {
                    name: tag.local_name().into_inner().to_owned(),
                    ours,
                    tag,
                    empty: true,
                },
                Event::End(_) => Item::Close,
                Event::Text(t) => Item::Text(t.xml10_content()),
                Event::CData(t) => Item::Text(t.xml10_content()),
                Event::GeneralRef(r) => Item::Text(self.reference(&r)?),
                Event::DocType(d) => {
                    if d.contains('[') {
                        return Err(self.error(
                            "a DOCTYPE with declarations is refused (entities are not expanded)",
                        ));
                    }
                    if !self.external_dtd {
                        return Err(self.error("a DOCTYPE is refused (this format has none)"));
                    }
                    continue;
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => continue,
                Event::Eof => Item::End,
            });
        }
    }

    /// The text of `&name;`: a character reference or one of XML's five
    /// predefined entities; anything else was never declared.
    fn reference(&self, r: &BytesRef<'_>) -> Result<Cow<'static, str>, ExchangeError> {
        Ok(Cow::Borrowed(match &**r {
            "lt" => "<",
            "gt" => ">",
            "amp" => "&",
            "apos" => "'",
            "quot" => "\"",
            name if r.is_char_ref() => {
                return match r.resolve_char_ref() {
                    Ok(Some(c)) if xml_char(c) => Ok(Cow::Owned(c.to_string())),
                    _ => Err(self.error(format!("&{name}; is not a character XML allows"))),
                };
            }
            name => return Err(self.error(format!("undeclared entity &{name};"))),
        }))
    }

    /// The value of attribute `key` (its qualified name, `xml:lang`).
    fn attr(&self, tag: &BytesStart<'_>, key: &str) -> Result<Option<String>, ExchangeError> {
        for a in tag.attributes() {
            let a = a.map_err(|e| self.error(format!("not well-formed XML: {e}")))?;
            if a.key.as_ref() == key {
                let v = a
                    .normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|e| self.error(format!("attribute {key}: {e}")))?;
                return Ok(Some(v.into_owned()));
            }
        }
        Ok(None)
    }
}

/// Which part of a unit an element of an XLIFF document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XliffFrame {
    /// `<xliff>`.
    Root,
    /// `<file>`.
    File,
    /// `<group>` (groups nest).
    Group,
    /// `<unit>`.
    Unit,
    /// `<segment>` or `<ignorable>` of a unit.
    Part,
    /// `<source>` of a part.
    Source,
    /// `<target>` of a part.
    Target,
    /// An inline element in a source or target: its text counts.
    Inline,
    /// Anything else (notes, original data, modules): its text does not.
    Other,
}

/// One `<segment>` or `<ignorable>` as read.
struct Part {
    ignorable: bool,
    source: String,
    target: Option<String>,
}

/// A unit as it is being read.
struct UnitDraft {
    id: String,
    state: Option<SegmentState>,
    seen_segment: bool,
    parts: Vec<Part>,
}

impl UnitDraft {
    /// The unit: its parts' sources in order and, when some part has a
    /// target, their targets in order, where an ignorable without one
    /// (whitespace between sentences) stands for itself.
    fn finish(self) -> ImportedUnit {
        let source = self.parts.iter().map(|p| p.source.as_str()).collect();
        let target = self.parts.iter().any(|p| p.target.is_some()).then(|| {
            self.parts
                .iter()
                .map(|p| match (&p.target, p.ignorable) {
                    (Some(t), _) => t.as_str(),
                    (None, true) => p.source.as_str(),
                    (None, false) => "",
                })
                .collect()
        });
        ImportedUnit {
            id: self.id,
            source,
            target,
            state: self.state,
        }
    }
}

/// Read an XLIFF 2.0, 2.1 or 2.2 document: every `<unit>` of every `<file>`
/// (groups included), in document order. A unit's source and target are the
/// concatenation of its segments' and ignorables' (an ignorable without a
/// target counts as its source in the target); inline elements give their
/// text only (`<cp hex>` its character); all whitespace is kept. The state is
/// that of the first `<segment>`, `None` when absent or not an XLIFF 2 state.
/// Refused: not XML, not XLIFF 2, a DOCTYPE, an undeclared entity, a unit
/// without an id, an id used twice (in any file), more than `max_units`
/// units.
pub fn parse_xliff(xml: &str, max_units: usize) -> Result<Vec<ImportedUnit>, ExchangeError> {
    let mut doc = Xml::new(xml, &[XLIFF2_NS, XLIFF22_NS], false);
    let mut stack: Vec<XliffFrame> = Vec::new();
    let mut units: Vec<ImportedUnit> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut unit: Option<UnitDraft> = None;
    let mut part: Option<Part> = None;
    let mut seen_root = false;
    loop {
        let closed = match doc.next()? {
            Item::End => break,
            Item::Text(t) => {
                if let Some(p) = part.as_mut() {
                    match stack.iter().rev().find(|f| **f != XliffFrame::Inline) {
                        Some(XliffFrame::Source) => p.source.push_str(&t),
                        Some(XliffFrame::Target) => {
                            p.target.get_or_insert_with(String::new).push_str(&t);
                        }
                        _ => {}
                    }
                }
                continue;
            }
            Item::Close => stack.pop(),
            Item::Open {
                name,
                ours,
                tag,
                empty,
            } => {
                let parent = stack.last().copied();
                let frame = match (parent, ours, name.as_str()) {
                    (None, _, _) => {
                        if seen_root {
                            return Err(doc.error("more than one root element"));
                        }
                        seen_root = true;
                        if name != "xliff" {
                            return Err(doc.error(format!(
                                "not an XLIFF document: the root element is <{name}>"
                            )));
                        }
                        if !ours {
                            return Err(doc.error(format!(
                                "not XLIFF 2: <xliff> is not in the namespace {XLIFF2_NS}"
                            )));
                        }
                        let version = doc.attr(&tag, "version")?.unwrap_or_default();
                        if !version.starts_with("2.") {
                            return Err(doc.error(format!(
                                "not XLIFF 2: version \"{version}\" (expected 2.0, 2.1 or 2.2)"
                            )));
                        }
                        XliffFrame::Root
                    }
                    (Some(XliffFrame::Root), true, "file") => XliffFrame::File,
                    (Some(XliffFrame::File | XliffFrame::Group), true, "group") => {
                        XliffFrame::Group
                    }
                    (Some(XliffFrame::File | XliffFrame::Group), true, "unit") => {
                        let id = doc.attr(&tag, "id")?.unwrap_or_default();
                        if id.is_empty() {
                            return Err(doc.error("a <unit> has no id"));
                        }
                        if ids.len() >= max_units {
                            return Err(doc.error(format!("more than {max_units} units")));
                        }
                        if !ids.insert(id.clone()) {
                            return Err(doc.error(format!("unit id \"{id}\" is used twice")));
                        }
                        unit = Some(UnitDraft {
                            id,
                            state: None,
                            seen_segment: false,
                            parts: Vec::new(),
                        });
                        XliffFrame::Unit
                    }
                    (Some(XliffFrame::Unit), true, "segment" | "ignorable") => {
                        let ignorable = name == "ignorable";
                        if let Some(u) = unit.as_mut()
                            && !ignorable
                            && !u.seen_segment
                        {
                            u.seen_segment = true;
                            u.state = doc
                                .attr(&tag, "state")?
                                .as_deref()
                                .and_then(SegmentState::parse);
                        }
                        part = Some(Part {
                            ignorable,
                            source: String::new(),
                            target: None,
                        });
                        XliffFrame::Part
                    }
                    (Some(XliffFrame::Part), true, "source") => XliffFrame::Source,
                    (Some(XliffFrame::Part), true, "target") => {
                        if let Some(p) = part.as_mut() {
                            p.target.get_or_insert_with(String::new);
                        }
                        XliffFrame::Target
                    }
                    (Some(XliffFrame::Source | XliffFrame::Target | XliffFrame::Inline), _, _) => {
                        if ours && name == "cp" {
                            // A character XML cannot carry, by its code point.
                            let c = doc
                                .attr(&tag, "hex")?
                                .and_then(|h| u32::from_str_radix(&h, 16).ok())
                                .and_then(char::from_u32)
                                .ok_or_else(|| doc.error("a <cp> without a valid hex"))?;
                            let side = stack.iter().rev().find(|f| **f != XliffFrame::Inline);
                            if let Some(p) = part.as_mut() {
                                match side {
                                    Some(XliffFrame::Source) => p.source.push(c),
                                    Some(XliffFrame::Target) => {
                                        p.target.get_or_insert_with(String::new).push(c);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        XliffFrame::Inline
                    }
                    _ => XliffFrame::Other,
                };
                if empty {
                    Some(frame)
                } else {
                    stack.push(frame);
                    continue;
                }
            }
        };
        match closed {
            Some(XliffFrame::Part) => {
                if let (Some(u), Some(p)) = (unit.as_mut(), part.take()) {
                    u.parts.push(p);
                }
            }
            Some(XliffFrame::Unit) => {
                if let Some(u) = unit.take() {
                    units.push(u.finish());
                }
            }
            _ => {}
        }
    }
    if !seen_root {
        return Err(ExchangeError(
            "not an XLIFF document: no root element".to_owned(),
        ));
    }
    if !stack.is_empty() {
        return Err(doc.error("the document ends inside an element"));
    }
    Ok(units)
}

/// Which language a TMX variant is in, as far as the reader cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    /// Tibetan.
    Bo,
    /// English.
    En,
}

/// The language of a TMX `xml:lang`: its primary subtag, whatever the
/// case and region (`bo`, `BO`, `bo-CN`; ISO 639-2 `bod`, `tib`, `eng`).
fn tmx_lang(tag: &str) -> Option<Lang> {
    let primary = tag.split(['-', '_']).next().unwrap_or_default();
    let is = |codes: &[&str]| codes.iter().any(|c| primary.eq_ignore_ascii_case(c));
    if is(&["bo", "bod", "tib"]) {
        Some(Lang::Bo)
    } else if is(&["en", "eng"]) {
        Some(Lang::En)
    } else {
        None
    }
}

/// Which part of a translation unit an element of a TMX document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TmxFrame {
    /// `<tmx>`.
    Root,
    /// `<body>`.
    Body,
    /// `<tu>`.
    Tu,
    /// `<tuv>`.
    Tuv,
    /// `<seg>`, `<sub>` and `<hi>`: their text counts.
    Text,
    /// Native codes (`<bpt>`, `<ept>`, `<it>`, `<ph>`, `<ut>`): markup of
    /// the original format, not text.
    Code,
    /// Anything else (header, notes, properties).
    Other,
}

/// Read a TMX document: for every `<tu>`, the text of its first Tibetan
/// and first English `<tuv>` (by `xml:lang`, or TMX 1.1's `lang`; see
/// [`tmx_lang`]), in document order; units lacking either are skipped. A
/// variant's text is that of its `<seg>` with the content of native-code
/// elements left out. Refused: not XML, not TMX, a DOCTYPE with declarations
/// (a bare `<!DOCTYPE tmx SYSTEM "tmx14.dtd">` is accepted), an undeclared
/// entity, more than `max_units` pairs.
pub fn parse_tmx(xml: &str, max_units: usize) -> Result<Vec<(String, String)>, ExchangeError> {
    let mut doc = Xml::new(xml, &[], true);
    let mut stack: Vec<TmxFrame> = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    // The current unit's Tibetan and English, and the current variant.
    let mut bo: Option<String> = None;
    let mut en: Option<String> = None;
    let mut variant: Option<(Lang, String)> = None;
    let mut seen_root = false;
    loop {
        let closed = match doc.next()? {
            Item::End => break,
            Item::Text(t) => {
                if stack.last() == Some(&TmxFrame::Text)
                    && let Some((_, text)) = variant.as_mut()
                {
                    text.push_str(&t);
                }
                continue;
            }
            Item::Close => stack.pop(),
            Item::Open {
                name, tag, empty, ..
            } => {
                let parent = stack.last().copied();
                let frame = match (parent, name.as_str()) {
                    (None, _) => {
                        if seen_root {
                            return Err(doc.error("more than one root element"));
                        }
                        seen_root = true;
                        if name != "tmx" {
                            return Err(doc.error(format!(
                                "not a TMX document: the root element is <{name}>"
                            )));
                        }
                        TmxFrame::Root
                    }
                    (Some(TmxFrame::Root), "body") => TmxFrame::Body,
                    (Some(TmxFrame::Body), "tu") => {
                        bo = None;
                        en = None;
                        TmxFrame::Tu
                    }
                    (Some(TmxFrame::Tu), "tuv") => {
                        let lang = match doc.attr(&tag, "xml:lang")? {
                            Some(l) => Some(l),
                            None => doc.attr(&tag, "lang")?,
                        };
                        variant = lang
                            .as_deref()
                            .and_then(tmx_lang)
                            .map(|l| (l, String::new()));
                        TmxFrame::Tuv
                    }
                    (Some(TmxFrame::Tuv), "seg") => TmxFrame::Text,
                    (Some(TmxFrame::Text), "bpt" | "ept" | "it" | "ph" | "ut") => TmxFrame::Code,
                    // Translatable text inside a code (a link's title).
                    (Some(TmxFrame::Code), "sub") => TmxFrame::Text,
                    (Some(TmxFrame::Text), _) => TmxFrame::Text,
                    (Some(TmxFrame::Code), _) => TmxFrame::Code,
                    _ => TmxFrame::Other,
                };
                if empty {
                    Some(frame)
                } else {
                    stack.push(frame);
                    continue;
                }
            }
        };
        match closed {
            Some(TmxFrame::Tuv) => match variant.take() {
                Some((Lang::Bo, text)) if bo.is_none() => bo = Some(text),
                Some((Lang::En, text)) if en.is_none() => en = Some(text),
                _ => {}
            },
            Some(TmxFrame::Tu) => {
                if let (Some(b), Some(e)) = (bo.take(), en.take()) {
                    if pairs.len() >= max_units {
                        return Err(doc.error(format!(
                            "more than {max_units} translation units with Tibetan and English"
                        )));
                    }
                    pairs.push((b, e));
                }
            }
            _ => {}
        }
    }
    if !seen_root {
        return Err(ExchangeError(
            "not a TMX document: no root element".to_owned(),
        ));
    }
    if !stack.is_empty() {
        return Err(doc.error("the document ends inside an element"));
    }
    Ok(pairs)
}

/// Which part of a concept an element of a TBX document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TbxFrame {
    /// `<martif>` (TBX v2) or `<tbx>` (v3).
    Root,
    /// `<termEntry>` (v2) or `<conceptEntry>` (v3).
    Concept,
    /// `<langSet>` (v2) or `<langSec>` (v3).
    Lang,
    /// `<term>`, and the inline elements in it: their text counts.
    Term,
    /// Anything else (header, descriptions, notes).
    Other,
}

/// Read a TBX termbase (v2 `martif` or v3 `tbx`, TBX-Basic and TBX-Core
/// alike; namespaces are not looked at): for every concept, its first
/// Tibetan and its first English term (languages by `xml:lang` of the
/// language section, as [`parse_tmx`] reads them), trimmed, in document
/// order; concepts lacking either are skipped. Refused as [`parse_tmx`]
/// refuses, with at most `max_concepts` pairs.
pub fn parse_tbx(xml: &str, max_concepts: usize) -> Result<Vec<(String, String)>, ExchangeError> {
    let mut doc = Xml::new(xml, &[], true);
    let mut stack: Vec<TbxFrame> = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    // The current concept's terms, language section and term.
    let mut bo: Option<String> = None;
    let mut en: Option<String> = None;
    let mut lang: Option<Lang> = None;
    let mut term = String::new();
    let mut seen_root = false;
    loop {
        let closed = match doc.next()? {
            Item::End => break,
            Item::Text(t) => {
                if stack.last() == Some(&TbxFrame::Term) {
                    term.push_str(&t);
                }
                continue;
            }
            Item::Close => stack.pop(),
            Item::Open {
                name, tag, empty, ..
            } => {
                let inside = |f: TbxFrame| stack.contains(&f);
                let frame = match name.as_str() {
                    _ if stack.is_empty() => {
                        if seen_root {
                            return Err(doc.error("more than one root element"));
                        }
                        seen_root = true;
                        if name != "martif" && name != "tbx" {
                            return Err(doc.error(format!(
                                "not a TBX document: the root element is <{name}>"
                            )));
                        }
                        TbxFrame::Root
                    }
                    _ if inside(TbxFrame::Term) => TbxFrame::Term,
                    "termEntry" | "conceptEntry" if !inside(TbxFrame::Concept) => {
                        bo = None;
                        en = None;
                        TbxFrame::Concept
                    }
                    "langSet" | "langSec"
                        if inside(TbxFrame::Concept) && !inside(TbxFrame::Lang) =>
                    {
                        let code = match doc.attr(&tag, "xml:lang")? {
                            Some(l) => Some(l),
                            None => doc.attr(&tag, "lang")?,
                        };
                        lang = code.as_deref().and_then(tmx_lang);
                        TbxFrame::Lang
                    }
                    "term" if inside(TbxFrame::Lang) => {
                        term.clear();
                        TbxFrame::Term
                    }
                    _ => TbxFrame::Other,
                };
                if empty {
                    // `<term/>` is an empty term: skipped below like one.
                    Some(frame)
                } else {
                    stack.push(frame);
                    continue;
                }
            }
        };
        match closed {
            // The outermost `<term>` (inline elements in it are Terms too).
            Some(TbxFrame::Term) if stack.last() != Some(&TbxFrame::Term) => {
                let t = term.trim();
                match lang {
                    _ if t.is_empty() => {}
                    Some(Lang::Bo) if bo.is_none() => bo = Some(t.to_owned()),
                    Some(Lang::En) if en.is_none() => en = Some(t.to_owned()),
                    _ => {}
                }
                term.clear();
            }
            Some(TbxFrame::Concept) => {
                if let (Some(b), Some(e)) = (bo.take(), en.take()) {
                    if pairs.len() >= max_concepts {
                        return Err(doc.error(format!(
                            "more than {max_concepts} concepts with Tibetan and English"
                        )));
                    }
                    pairs.push((b, e));
                }
            }
            _ => {}
        }
    }
    if !seen_root {
        return Err(ExchangeError(
            "not a TBX document: no root element".to_owned(),
        ));
    }
    if !stack.is_empty() {
        return Err(doc.error("the document ends inside an element"));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts that must survive a write and a read unchanged.
    const TRICKY: &[&str] = &[
        "བཀྲ་ཤིས་བདེ་ལེགས།",
        "༄༅། །རྒྱ་གར་སྐད་དུ། ཨཱརྱ་\n",
        "  leading and trailing  ",
        "line one\nline two\n\n",
        "<b>&amp;</b> \"double\" 'single' ]]> & < >",
        "tab\there, CRLF\r\nand a lone \r CR",
        "",
        " ",
        "emoji 🙏, no-break\u{a0}space, zero-width\u{200b}",
    ];

    fn segments() -> Vec<Segment> {
        let states = [
            SegmentState::Initial,
            SegmentState::Translated,
            SegmentState::Reviewed,
            SegmentState::Final,
        ];
        TRICKY
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let i = u32::try_from(i).expect("few");
                Segment {
                    index: i * 3,
                    source: (*text).to_owned(),
                    // Every third untranslated; the others take another
                    // tricky text as translation.
                    target: (i % 3 != 2)
                        .then(|| TRICKY[(i as usize + 4) % TRICKY.len()].to_owned()),
                    state: states[i as usize % states.len()],
                    note: (i % 2 == 0).then(|| format!("note {i}: <&> \"q\"\n  second line")),
                }
            })
            .collect()
    }

    #[test]
    fn state_names_round_trip() {
        for (state, name) in [
            (SegmentState::Initial, "initial"),
            (SegmentState::Translated, "translated"),
            (SegmentState::Reviewed, "reviewed"),
            (SegmentState::Final, "final"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(SegmentState::parse(name), Some(state));
        }
        for bad in ["", "Final", "needs-review-translation", "signed-off"] {
            assert_eq!(SegmentState::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn unit_ids_are_canonical() {
        for i in [0, 1, 9, 10, 17, 1000, u32::MAX] {
            assert_eq!(unit_index(&unit_id(i)), Some(i));
        }
        assert_eq!(unit_id(42), "c42");
        for (id, want) in [
            ("c0", Some(0)),
            ("c17", Some(17)),
            ("c4294967295", Some(u32::MAX)),
            ("c4294967296", None),
            ("c", None),
            ("c01", None),
            ("c00", None),
            ("C1", None),
            ("c+1", None),
            ("c-1", None),
            ("c 1", None),
            ("c1 ", None),
            ("c1a", None),
            ("1", None),
            ("x1", None),
            ("", None),
            ("c١", None),
        ] {
            assert_eq!(unit_index(id), want, "{id:?}");
        }
    }

    #[test]
    fn xliff_round_trips_text_states_and_ids() {
        let segs = segments();
        let doc = xliff("job 7/α", &segs);
        let units = parse_xliff(&doc, 100).expect("parse");
        let want: Vec<ImportedUnit> = segs
            .iter()
            .map(|s| ImportedUnit {
                id: unit_id(s.index),
                source: s.source.clone(),
                target: s.target.clone(),
                state: Some(s.state),
            })
            .collect();
        assert_eq!(units, want);
        for u in &units {
            assert!(unit_index(&u.id).is_some(), "{}", u.id);
        }
    }

    #[test]
    fn xliff_document_shape() {
        let doc = xliff(
            "job 7/α",
            &[
                Segment {
                    index: 3,
                    source: "ཀ".into(),
                    target: Some("ka".into()),
                    state: SegmentState::Reviewed,
                    note: Some("check <this>".into()),
                },
                Segment {
                    index: 4,
                    source: "ཁ".into(),
                    target: None,
                    state: SegmentState::Initial,
                    note: None,
                },
            ],
        );
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert!(doc.contains(
            "<xliff xmlns=\"urn:oasis:names:tc:xliff:document:2.0\" version=\"2.1\" srcLang=\"bo\" trgLang=\"en\">"
        ));
        assert!(doc.contains("<file id=\"job_7_α\">"), "{doc}");
        let c3 = "    <unit id=\"c3\">\n      <notes>\n        <note>check &lt;this&gt;</note>\n      </notes>\n      <segment state=\"reviewed\">\n        <source xml:space=\"preserve\">ཀ</source>\n        <target xml:space=\"preserve\">ka</target>\n      </segment>\n    </unit>\n";
        assert!(doc.contains(c3), "{doc}");
        let c4 = "    <unit id=\"c4\">\n      <segment state=\"initial\">\n        <source xml:space=\"preserve\">ཁ</source>\n      </segment>\n    </unit>\n";
        assert!(doc.contains(c4), "{doc}");
        assert_eq!(nmtoken(""), "f1");
    }

    #[test]
    fn characters_xml_cannot_carry_become_replacement_characters() {
        let seg = Segment {
            index: 0,
            source: "a\u{0}b\u{1}c\u{8}d\u{b}e\u{1f}f\u{fffe}g\u{ffff}".into(),
            target: Some("\t\n\r kept \u{7f}\u{85}".into()),
            state: SegmentState::Translated,
            note: Some("bell\u{7}".into()),
        };
        let want_source = "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e\u{fffd}f\u{fffd}g\u{fffd}";
        let units = parse_xliff(&xliff("f", std::slice::from_ref(&seg)), 10).expect("xliff");
        assert_eq!(units[0].source, want_source);
        assert_eq!(units[0].target.as_deref(), Some("\t\n\r kept \u{7f}\u{85}"));
        let pairs = parse_tmx(&tmx(std::slice::from_ref(&seg), "1", Utc::now()), 10).expect("tmx");
        assert_eq!(pairs[0].0, want_source);
        assert!(!html("t", &[seg]).contains('\u{7}'));
    }

    #[test]
    fn tmx_round_trips_translated_segments() {
        let segs = segments();
        let created = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .expect("date")
            .with_timezone(&Utc);
        let doc = tmx(&segs, "0.1.0 \"beta\"", created);
        let pairs = parse_tmx(&doc, 100).expect("parse");
        let want: Vec<(String, String)> = segs
            .iter()
            .filter_map(|s| Some((s.source.clone(), s.target.clone()?)))
            .collect();
        assert_eq!(pairs, want);
        assert!(want.len() < segs.len(), "some are untranslated");
        assert!(doc.contains(
            "<header creationtool=\"Lotsawa\" creationtoolversion=\"0.1.0 &quot;beta&quot;\" \
             datatype=\"plaintext\" segtype=\"paragraph\" adminlang=\"en\" srclang=\"bo\" \
             o-tmf=\"lotsawa\" creationdate=\"20240102T030405Z\"/>"
        ));
        assert!(
            doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tmx version=\"1.4\">")
        );
        assert!(doc.contains("<tu tuid=\"0\">\n      <note>note 0: &lt;&amp;&gt; \"q\"\n  second line</note>\n      <tuv xml:lang=\"bo\"><seg>"));
        assert!(doc.contains("<tu tuid=\"3\">\n      <tuv xml:lang=\"bo\">"));
        assert!(!doc.contains("<tu tuid=\"6\">"), "untranslated: no tu");
    }

    /// A unit of an XLIFF 2 document in the core namespace.
    fn xlf(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<xliff xmlns=\"urn:oasis:names:tc:xliff:document:2.0\" version=\"2.0\" srcLang=\"bo\" trgLang=\"en\">\n<file id=\"f1\">\n{body}\n</file>\n</xliff>\n"
        )
    }

    #[test]
    fn inline_elements_give_their_text() {
        let doc = xlf(r#"<unit id="c0">
  <originalData><data id="d1">&lt;br/&gt;</data></originalData>
  <notes><note>not text</note></notes>
  <segment state="translated" id="s1">
    <source>ཀ<ph id="1" dataRef="d1"/>ཁ</source>
    <target>a <pc id="2">bold <mrk id="m1" translate="no">mark</mrk></pc><ph id="3"/> end<cp hex="1F64F"/><![CDATA[ <raw> & ]]><!-- comment --></target>
  </segment>
  <ignorable><source> </source></ignorable>
  <segment state="final">
    <source>ག</source>
    <target xml:space="preserve">&#13;g&#x9;</target>
  </segment>
</unit>
<group id="g"><group id="h"><unit id="c1"><segment><source>ང</source></segment></unit></group></group>"#);
        let units = parse_xliff(&doc, 10).expect("parse");
        assert_eq!(
            units,
            vec![
                ImportedUnit {
                    id: "c0".into(),
                    source: "ཀཁ ག".into(),
                    target: Some("a bold mark end🙏 <raw> &  \rg\t".into()),
                    state: Some(SegmentState::Translated),
                },
                ImportedUnit {
                    id: "c1".into(),
                    source: "ང".into(),
                    target: None,
                    state: None,
                },
            ]
        );
    }

    #[test]
    fn xliff_variants_are_read() {
        // Several files, a prefixed namespace, XLIFF 2.2, empty elements,
        // a state that is not XLIFF 2's, a segment without target next to
        // one with.
        let doc = r#"<x:xliff xmlns:x="urn:oasis:names:tc:xliff:document:2.2" version="2.2" srcLang="bo">
<x:file id="a"><x:unit id="u1"><x:segment state="needs-review"><x:source/><x:target/></x:segment></x:unit></x:file>
<x:file id="b"><x:unit id="u2"><x:segment><x:source>ཀ</x:source></x:segment><x:segment><x:source>ཁ</x:source><x:target>kha</x:target></x:segment></x:unit>
<x:unit id="u3"/></x:file>
</x:xliff>"#;
        let units = parse_xliff(doc, 3).expect("parse");
        let got: Vec<_> = units
            .iter()
            .map(|u| {
                (
                    u.id.as_str(),
                    u.source.as_str(),
                    u.target.as_deref(),
                    u.state,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("u1", "", Some(""), None),
                ("u2", "ཀཁ", Some("kha"), None),
                ("u3", "", None, None),
            ]
        );
    }

    /// What translate-toolkit 3.20.4 made of `lotsawa_written.xlf` (which
    /// is `xliff("job-1", &segments())`): `tests/tools/ttk_edit.py` with
    /// these edits, saved by its own serializer (it rewrites the empty
    /// `<source>` as `<source xml:space="preserve"/>`).
    #[test]
    fn reads_what_translate_toolkit_saved() {
        assert_eq!(
            xliff("job-1", &segments()),
            include_str!("../tests/data/exchange/lotsawa_written.xlf"),
            "the writer changed: remake both files with tests/tools/ttk_edit.py"
        );
        let units =
            parse_xliff(include_str!("../tests/data/exchange/ttk_edited.xlf"), 100).expect("parse");
        let edits: &[(&str, Option<&str>, Option<SegmentState>)] = &[
            ("c0", Some("  edited: <i>&amp;</i> \"q\"\n\tཀ་ཁ། "), None),
            ("c3", None, Some(SegmentState::Final)),
            (
                "c6",
                Some("new\r\nline & <tag>"),
                Some(SegmentState::Translated),
            ),
            ("c15", Some("reviewed text"), Some(SegmentState::Reviewed)),
            ("c24", Some(" "), Some(SegmentState::Initial)),
        ];
        let want: Vec<ImportedUnit> = segments()
            .into_iter()
            .map(|s| {
                let id = unit_id(s.index);
                let edit = edits.iter().find(|e| e.0 == id);
                ImportedUnit {
                    target: match edit {
                        Some((_, Some(t), _)) => Some((*t).to_owned()),
                        _ => s.target,
                    },
                    state: Some(edit.and_then(|e| e.2).unwrap_or(s.state)),
                    source: s.source,
                    id,
                }
            })
            .collect();
        assert_eq!(units, want);
    }

    #[test]
    fn bad_xliff_is_refused_with_a_reason() {
        let unit =
            |id: &str| format!("<unit id=\"{id}\"><segment><source>x</source></segment></unit>");
        let cases: Vec<(&str, String, &str)> = vec![
            ("not XML", "this is not XML".into(), "no root element"),
            ("empty", String::new(), "no root element"),
            ("unclosed", "<xliff xmlns=\"urn:oasis:names:tc:xliff:document:2.0\" version=\"2.0\"><file id=\"f\">".into(), "ends inside an element"),
            ("mismatched", xlf("<unit id=\"c0\"><segment><source>x</target></segment></unit>"), "not well-formed XML"),
            ("bad attribute", xlf("<unit id=c0></unit>"), "not well-formed XML"),
            ("other root", "<tmx version=\"1.4\"><body/></tmx>".into(), "the root element is <tmx>"),
            ("XLIFF 1.2", "<xliff xmlns=\"urn:oasis:names:tc:xliff:document:1.2\" version=\"1.2\"><file/></xliff>".into(), "not XLIFF 2"),
            ("no namespace", "<xliff version=\"2.0\"><file id=\"f\"/></xliff>".into(), "not in the namespace"),
            ("version 1.2", "<xliff xmlns=\"urn:oasis:names:tc:xliff:document:2.0\" version=\"1.2\"/>".into(), "version \"1.2\""),
            ("no version", "<xliff xmlns=\"urn:oasis:names:tc:xliff:document:2.0\"/>".into(), "version \"\""),
            ("entity", format!("<!DOCTYPE xliff [<!ENTITY boom \"lol\">]>\n{}", xlf("<unit id=\"c0\"><segment><source>&boom;</source></segment></unit>")), "DOCTYPE"),
            ("external entity", format!("<!DOCTYPE xliff [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}", xlf("")), "DOCTYPE"),
            ("bare DOCTYPE", format!("<!DOCTYPE xliff SYSTEM \"x.dtd\">{}", xlf("")), "DOCTYPE"),
            ("undeclared entity", xlf("<unit id=\"c0\"><segment><source>&nbsp;</source></segment></unit>"), "undeclared entity &nbsp;"),
            ("bad char ref", xlf("<unit id=\"c0\"><segment><source>&#1;</source></segment></unit>"), "not a character XML allows"),
            ("no id", xlf("<unit><segment><source>x</source></segment></unit>"), "line 4: a <unit> has no id"),
            ("empty id", xlf("<unit id=\"\"/>"), "has no id"),
            ("duplicate", xlf(&format!("{}\n{}", unit("c0"), unit("c0"))), "line 5: unit id \"c0\" is used twice"),
            ("duplicate across files", format!("<xliff xmlns=\"urn:oasis:names:tc:xliff:document:2.0\" version=\"2.1\"><file id=\"a\">{}</file><file id=\"b\">{}</file></xliff>", unit("c1"), unit("c1")), "used twice"),
            ("too many", xlf(&format!("{}{}{}", unit("c0"), unit("c1"), unit("c2"))), "more than 2 units"),
            ("two roots", format!("{}{}", xlf(""), xlf("")), "more than one root element"),
        ];
        for (name, doc, want) in cases {
            match parse_xliff(&doc, 2) {
                Ok(units) => panic!("{name}: accepted, {units:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
            }
        }
    }

    #[test]
    fn tmx_languages_codes_and_skips() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE tmx SYSTEM "tmx14.dtd">
<tmx version="1.4">
  <header creationtool="x" srclang="bo"/>
  <body>
    <tu><tuv xml:lang="BO"><seg>ཀ</seg></tuv><tuv xml:lang="en-US"><seg>ka</seg></tuv></tu>
    <tu><tuv xml:lang="bo-CN"><seg>ཁ</seg></tuv><tuv xml:lang="fr"><seg>kha (fr)</seg></tuv></tu>
    <tu><tuv lang="bo"><seg>ག</seg></tuv><tuv lang="EN"><seg>ga</seg></tuv></tu>
    <tu><tuv xml:lang="bos"><seg>not Tibetan</seg></tuv><tuv xml:lang="en"><seg>x</seg></tuv></tu>
    <tu>
      <note>n</note><prop type="x">p</prop>
      <tuv xml:lang="en"><seg>first <hi>high</hi> <ph>&lt;br/&gt;</ph><bpt i="1">&lt;a title="<sub>sub</sub>"&gt;</bpt>link<ept i="1">&lt;/a&gt;</ept></seg></tuv>
      <tuv xml:lang="bo"><seg>  ང
</seg></tuv>
      <tuv xml:lang="en"><seg>second</seg></tuv>
    </tu>
    <tu><tuv xml:lang="bo"><seg/></tuv><tuv xml:lang="en"><seg></seg></tuv></tu>
  </body>
</tmx>"#;
        let pairs = parse_tmx(doc, 10).expect("parse");
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(b, e)| (b.as_str(), e.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ཀ", "ka"),
                ("ག", "ga"),
                ("  ང\n", "first high sublink"),
                ("", ""),
            ]
        );
    }

    #[test]
    fn bad_tmx_is_refused_with_a_reason() {
        let tu = "<tu><tuv xml:lang=\"bo\"><seg>ཀ</seg></tuv><tuv xml:lang=\"en\"><seg>ka</seg></tuv></tu>";
        let cases: Vec<(&str, String, &str)> = vec![
            ("not XML", "<tmx><body></tmx>".into(), "not well-formed XML"),
            ("empty", String::new(), "no root element"),
            ("other root", xliff("f", &[]), "the root element is <xliff>"),
            ("entity", format!("<!DOCTYPE tmx [<!ENTITY a \"aaaa\">]><tmx version=\"1.4\"><body>{tu}</body></tmx>"), "DOCTYPE"),
            ("undeclared entity", "<tmx version=\"1.4\"><body><tu><tuv xml:lang=\"bo\"><seg>&a;</seg></tuv></tu></body></tmx>".into(), "undeclared entity &a;"),
            ("too many", format!("<tmx version=\"1.4\">\n<body>\n{tu}\n{tu}\n{tu}\n</body></tmx>"), "line 5: more than 2 translation units"),
        ];
        for (name, doc, want) in cases {
            match parse_tmx(&doc, 2) {
                Ok(pairs) => panic!("{name}: accepted, {pairs:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
            }
        }
    }

    #[test]
    fn tbx_first_terms_per_concept() {
        let v2 = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE martif SYSTEM "TBXcoreStructV02.dtd">
<martif type="TBX-Basic" xml:lang="en">
  <martifHeader><fileDesc><sourceDesc><p>glossary</p></sourceDesc></fileDesc></martifHeader>
  <text><body>
    <termEntry id="t1">
      <descrip type="definition">not a term</descrip>
      <langSet xml:lang="bo"><tig><term>སངས་རྒྱས</term></tig><tig><term>second</term></tig></langSet>
      <langSet xml:lang="en-GB"><ntig><termGrp><term> Buddha </term></termGrp></ntig></langSet>
    </termEntry>
    <termEntry id="t2"><langSet xml:lang="bo"><tig><term>ཆོས</term></tig></langSet></termEntry>
    <termEntry id="t3"><langSet xml:lang="en"><tig><term/></tig><tig><term>mind <hi type="bold">itself</hi></term></tig></langSet><langSet lang="BO"><tig><term>སེམས་ཉིད</term></tig></langSet></termEntry>
  </body></text>
</martif>"#;
        let v3 = r#"<?xml version="1.0"?>
<tbx type="TBX-Core" style="dca" xml:lang="en" xmlns="urn:iso:std:iso:30042:ed-2">
  <tbxHeader><fileDesc><sourceDesc><p>x</p></sourceDesc></fileDesc></tbxHeader>
  <text><body>
    <conceptEntry id="c1">
      <langSec xml:lang="bo"><termSec><term>བླ་མ</term></termSec></langSec>
      <langSec xml:lang="en"><termSec><term>lama &amp; guru</term></termSec><termSec><term>teacher</term></termSec></langSec>
    </conceptEntry>
  </body></text>
</tbx>"#;
        assert_eq!(
            parse_tbx(v2, 10).expect("v2"),
            vec![
                ("སངས་རྒྱས".to_owned(), "Buddha".to_owned()),
                ("སེམས་ཉིད".to_owned(), "mind itself".to_owned()),
            ]
        );
        assert_eq!(
            parse_tbx(v3, 10).expect("v3"),
            vec![("བླ་མ".to_owned(), "lama & guru".to_owned())]
        );
        for (name, doc, want) in [
            ("too many", v2, "more than 1 concepts"),
            (
                "other root",
                "<tmx version=\"1.4\"/>",
                "the root element is <tmx>",
            ),
            (
                "entity",
                "<!DOCTYPE martif [<!ENTITY x \"y\">]><martif/>",
                "DOCTYPE",
            ),
            ("not XML", "<martif><text></martif>", "not well-formed XML"),
        ] {
            match parse_tbx(doc, 1) {
                Ok(pairs) => panic!("{name}: accepted, {pairs:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
            }
        }
    }

    #[test]
    fn html_is_escaped_and_bilingual() {
        let page = html(
            "<script>alert('t')</script> & ཀ",
            &[
                Segment {
                    index: 0,
                    source: "བཀྲ་ཤིས།\n<i>".into(),
                    target: Some("Hello \"you\" & 'me'\n</td>".into()),
                    state: SegmentState::Reviewed,
                    note: Some("<b>note</b>".into()),
                },
                Segment {
                    index: 1,
                    source: "ཀ".into(),
                    target: None,
                    state: SegmentState::Initial,
                    note: None,
                },
            ],
        );
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(page.contains("@media print"));
        assert!(
            page.contains("<title>&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt; &amp; ཀ</title>")
        );
        assert!(!page.contains("<script>"));
        assert!(page.contains(
            "<tr class=\"s-reviewed\"><td class=\"n\">0<span class=\"state\">reviewed</span></td>\
             <td lang=\"bo\">བཀྲ་ཤིས།\n&lt;i&gt;</td>\
             <td lang=\"en\">Hello &quot;you&quot; &amp; &#39;me&#39;\n&lt;/td&gt;\
             <span class=\"note\">&lt;b&gt;note&lt;/b&gt;</span></td></tr>"
        ), "{page}");
        assert!(page.contains(
            "<td class=\"n\">1<span class=\"state\">initial</span></td><td lang=\"bo\">ཀ</td>\
             <td lang=\"en\"><span class=\"missing\">\u{2014}</span></td>"
        ));
        assert!(page.ends_with("</html>\n"));
    }
}
