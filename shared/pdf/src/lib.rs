//! PDF input: the text of a PDF in reading order, with its Tibetan
//! recovered where the text layer is broken.
//!
//! A PDF made from good Tibetan Unicode often has a broken text layer: a
//! browser's PDF maps the stacks of Tibetan Machine Uni to private-use code
//! points and the contextual vowels of Noto Serif Tibetan to NUL. This crate
//! reads each glyph's text, in order of preference, from
//! 1. the marked-content `ActualText` around it (what the producer knew);
//! 2. the font's ToUnicode map, when it gives real text;
//! 3. the known private-use code points of the Tibetan Machine family;
//! 4. the font's own shaping tables: Tibetan clusters are shaped with the
//!    embedded font and the glyph runs read back through that table.
//!
//! Pages are separated by a form feed (U+000C) in the text, so the page of
//! any offset is the number of form feeds before it, plus one. A file that is
//! not a PDF, is encrypted or broken, has no text layer (a scan), or whose
//! Tibetan stays malformed after recovery is refused with a reason.

mod check;
mod cmap;
mod font;
mod layout;
mod recover;
mod walk;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use check::syllables;
use lotsawa_core::segment::{is_shad, is_tsheg};

/// The page separator in extracted text.
pub const PAGE_BREAK: char = '\u{000C}';

/// Largest share of malformed Tibetan syllables a file may keep.
pub const MAX_INVALID_SHARE: f64 = 0.005;

/// Why a PDF is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PdfError {
    /// Not a PDF at all.
    #[error("the file is not a PDF (it does not begin with %PDF-)")]
    NotPdf,
    /// Encrypted or password-protected.
    #[error(
        "the PDF is encrypted: remove its password and protection (print it to a new PDF) and send it again"
    )]
    Encrypted,
    /// Cannot be parsed.
    #[error("the PDF is damaged and cannot be read: {0}")]
    Broken(String),
    /// Pages of images and no text.
    #[error(
        "the PDF has no text layer: its {pages} page(s) hold only images, as a scan does; run OCR on it first and send the recognized text (or the PDF with its text layer)"
    )]
    Scanned {
        /// Pages in the file.
        pages: usize,
    },
    /// No text and no images.
    #[error("the PDF holds no text")]
    NoText,
    /// Text, but none of it Tibetan.
    #[error(
        "the PDF's text has no Tibetan script: if its pages show Tibetan, they are set in a legacy font that is not Unicode (Tibetan Machine Web, Sambhota, TCRC and the like) or drawn as images; convert the text to Unicode, or run OCR"
    )]
    NoTibetan,
    /// The Tibetan stays malformed after every recovery.
    #[error(
        "the Tibetan of this PDF cannot be recovered: {bad} of its {total} Tibetan syllables are malformed or hold private-use or control characters after recovery (the first: \"{example}\"); its fonts draw Tibetan without a usable text layer. Send the Unicode text, or a PDF made with Tibetan Machine Uni, Noto Serif Tibetan or another Unicode font"
    )]
    Unrecoverable {
        /// Malformed syllables.
        bad: usize,
        /// Tibetan syllables in all.
        total: usize,
        /// The first malformed syllable, escaped.
        example: String,
    },
    /// Reading took longer than allowed.
    #[error("reading the PDF took longer than the time allowed")]
    TooSlow,
    /// Too many pages.
    #[error("the PDF has {pages} pages; at most {max} are read")]
    TooManyPages {
        /// Pages in the file.
        pages: usize,
        /// The limit.
        max: usize,
    },
}

/// Limits of one extraction.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time allowed.
    pub budget: Duration,
    /// Most pages read.
    pub max_pages: usize,
    /// Largest share of malformed Tibetan syllables accepted
    /// ([`MAX_INVALID_SHARE`]).
    pub max_invalid_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(60),
            max_pages: 5_000,
            max_invalid_share: MAX_INVALID_SHARE,
        }
    }
}

/// What was read, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The text, pages separated by [`PAGE_BREAK`].
    pub text: String,
    /// Pages in the file.
    pub pages: usize,
    /// Glyphs whose text came from an `ActualText` span.
    pub from_actual_text: usize,
    /// Glyphs whose text came from the Tibetan Machine table.
    pub from_font_table: usize,
    /// Glyphs whose text came from shaping the font.
    pub from_shaping: usize,
    /// Tibetan syllables.
    pub syllables: usize,
    /// Malformed syllables left (below the refusal threshold).
    pub malformed: usize,
}

/// Whether `bytes` look like a PDF (`%PDF-` in the first kilobyte, as
/// readers accept it).
pub fn is_pdf(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)]
        .windows(5)
        .any(|w| w == b"%PDF-")
}

/// Read the text of a PDF.
pub fn extract(bytes: &[u8], options: &Options) -> Result<Extracted, PdfError> {
    if !is_pdf(bytes) {
        return Err(PdfError::NotPdf);
    }
    let deadline = Instant::now() + options.budget;
    let doc = lopdf::Document::load_mem(bytes).map_err(|e| match e {
        lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword => PdfError::Encrypted,
        e => PdfError::Broken(e.to_string()),
    })?;
    // lopdf opens a file encrypted with an empty password by itself; such a
    // file is still refused: its owner asked for it not to be copied.
    if doc.was_encrypted() || doc.is_encrypted() {
        return Err(PdfError::Encrypted);
    }
    let pages = doc.get_pages();
    if pages.len() > options.max_pages {
        return Err(PdfError::TooManyPages {
            pages: pages.len(),
            max: options.max_pages,
        });
    }
    let mut cache = walk::FontCache::default();
    let mut maps = Maps::default();
    let mut out = Extracted {
        text: String::new(),
        pages: pages.len(),
        from_actual_text: 0,
        from_font_table: 0,
        from_shaping: 0,
        syllables: 0,
        malformed: 0,
    };
    let mut glyphs = 0usize;
    let mut images = 0usize;
    for (n, (_, id)) in pages.iter().enumerate() {
        let page = walk::page(&doc, *id, &mut cache, deadline)?;
        glyphs += page.glyphs.len();
        images += page.images;
        let items = decode(&page, &mut maps, &mut out);
        if n > 0 {
            out.text.push(PAGE_BREAK);
        }
        out.text.push_str(&layout::page_text(&items));
        if Instant::now() > deadline {
            return Err(PdfError::TooSlow);
        }
    }
    if out.text.trim().is_empty() {
        return Err(if glyphs == 0 && images > 0 {
            PdfError::Scanned { pages: out.pages }
        } else {
            PdfError::NoText
        });
    }
    let (total, bad, example) = check::syllables(&out.text);
    if bad > 0 && (bad as f64) > options.max_invalid_share * total as f64 {
        return Err(PdfError::Unrecoverable {
            bad,
            total,
            example: example.unwrap_or_default(),
        });
    }
    if !out
        .text
        .chars()
        .any(|c| ('\u{0F00}'..='\u{0FFF}').contains(&c))
    {
        return Err(PdfError::NoTibetan);
    }
    // What little is left is dropped: never passed on to a translation.
    if bad > 0 {
        out.text.retain(|c| !check::is_junk(c));
    }
    out.syllables = total;
    out.malformed = bad;
    Ok(out)
}

/// Glyph maps of the embedded fonts built so far.
#[derive(Default)]
struct Maps {
    embedded: HashMap<*const font::Font, Option<recover::GlyphMap>>,
}

/// A glyph's text as the file gives it, with Tibetan Machine code points
/// replaced; `None` when it has none usable.
fn glyph_text(font: &font::Font, code: u32, from_table: &mut usize) -> Option<String> {
    let t = font.text(code)?;
    if t.is_empty()
        || t.chars()
            .any(|c| c == '\0' || (c.is_control() && c != '\t'))
    {
        return None;
    }
    if t.chars().any(recover::is_private) {
        if font.tibetan_machine {
            let r = recover::tibetan_machine(t)?;
            *from_table += 1;
            return Some(r);
        }
        return None;
    }
    Some(t.to_owned())
}

fn separator(t: &str) -> bool {
    t.chars()
        .all(|c| c.is_whitespace() || is_tsheg(c) || is_shad(c))
}

/// Texts at positions: spans once, runs of unknown glyphs recovered through
/// the font's shaping.
fn decode(page: &walk::Page, maps: &mut Maps, out: &mut Extracted) -> Vec<layout::Item> {
    let mut items: Vec<layout::Item> = Vec::with_capacity(page.glyphs.len());
    let mut span_item: HashMap<usize, usize> = HashMap::new();
    // Glyphs of the current run (same font, no span, between separators).
    let mut run: Vec<(usize, Option<String>)> = Vec::new();
    let flush = |run: &mut Vec<(usize, Option<String>)>,
                 items: &mut Vec<layout::Item>,
                 maps: &mut Maps,
                 out: &mut Extracted| {
        if run.is_empty() {
            return;
        }
        let first = &page.glyphs[run[0].0];
        let font = &page.fonts[first.font];
        if run.iter().any(|(_, t)| t.is_none()) {
            let ids: Option<Vec<u16>> = run
                .iter()
                .map(|(i, _)| font.gid(page.glyphs[*i].code))
                .collect();
            let given: Vec<Option<String>> = run.iter().map(|(_, t)| t.clone()).collect();
            let embedded = maps
                .embedded
                .entry(Rc::as_ptr(font))
                .or_insert_with(|| font.program.as_deref().and_then(recover::GlyphMap::build));
            let text = ids
                .as_ref()
                .and_then(|ids| embedded.as_ref()?.decode(ids, &given));
            if let Some(text) = text {
                let last = &page.glyphs[run[run.len() - 1].0];
                out.from_shaping += run.len();
                items.push(layout::Item {
                    x: first.x,
                    y: first.y,
                    end: last.x + last.w,
                    size: first.size,
                    text,
                });
                run.clear();
                return;
            }
        }
        for (i, t) in run.drain(..) {
            let g = &page.glyphs[i];
            items.push(layout::Item {
                x: g.x,
                y: g.y,
                end: g.x + g.w,
                size: g.size,
                text: t.unwrap_or_else(|| '\u{FFFD}'.to_string()),
            });
        }
    };
    for (i, g) in page.glyphs.iter().enumerate() {
        if let Some(s) = g.span {
            flush(&mut run, &mut items, maps, out);
            out.from_actual_text += 1;
            match span_item.get(&s) {
                Some(&k) => items[k].end = items[k].end.max(g.x + g.w),
                None => {
                    span_item.insert(s, items.len());
                    items.push(layout::Item {
                        x: g.x,
                        y: g.y,
                        end: g.x + g.w,
                        size: g.size,
                        text: page.spans[s].clone(),
                    });
                }
            }
            continue;
        }
        let font = &page.fonts[g.font];
        let text = glyph_text(font, g.code, &mut out.from_font_table);
        if let Some((j, _)) = run.first()
            && page.glyphs[*j].font != g.font
        {
            flush(&mut run, &mut items, maps, out);
        }
        if text.as_deref().is_some_and(separator) {
            flush(&mut run, &mut items, maps, out);
            run.push((i, text));
            flush(&mut run, &mut items, maps, out);
        } else {
            run.push((i, text));
        }
    }
    flush(&mut run, &mut items, maps, out);
    items
}
