//! The content-stream walker: every glyph a page shows, with its position,
//! font, code and the marked-content `ActualText` span around it.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use lopdf::content::Content;
use lopdf::{Dictionary, Document, Object};

use crate::PdfError;
use crate::font::{Font, deref, dict, number, stream_bytes};

/// One glyph as shown.
#[derive(Debug, Clone)]
pub struct Glyph {
    /// Origin, in page space (y grows upwards).
    pub x: f32,
    /// Baseline.
    pub y: f32,
    /// Advance in page space.
    pub w: f32,
    /// Font size in page space.
    pub size: f32,
    /// Index of its font in [`Page::fonts`].
    pub font: usize,
    /// The character code.
    pub code: u32,
    /// The `ActualText` span it is part of.
    pub span: Option<usize>,
}

/// What a page shows.
#[derive(Debug, Default)]
pub struct Page {
    /// Glyphs in the order the page draws them.
    pub glyphs: Vec<Glyph>,
    /// Fonts, by index.
    pub fonts: Vec<Rc<Font>>,
    /// `ActualText` strings, by span index.
    pub spans: Vec<String>,
    /// Images drawn (a page of images and no glyphs is a scan).
    pub images: usize,
}

type Matrix = [f32; 6];
const IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];

fn mul(a: &Matrix, b: &Matrix) -> Matrix {
    [
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
        a[4] * b[0] + a[5] * b[2] + b[4],
        a[4] * b[1] + a[5] * b[3] + b[5],
    ]
}

#[derive(Clone)]
struct State {
    ctm: Matrix,
    font: Option<usize>,
    size: f32,
    char_space: f32,
    word_space: f32,
    scale: f32,
    leading: f32,
    rise: f32,
}

/// Fonts loaded once per document, by object id.
#[derive(Default)]
pub struct FontCache {
    by_id: HashMap<lopdf::ObjectId, Rc<Font>>,
}

struct Walker<'a> {
    doc: &'a Document,
    cache: &'a mut FontCache,
    page: Page,
    font_index: HashMap<*const Font, usize>,
    deadline: Instant,
    ops: usize,
    /// Open marked-content sequences: the span each one opened, if any.
    marks: Vec<Option<usize>>,
}

/// Most nested form XObjects followed.
const MAX_DEPTH: usize = 12;
/// Most content bytes one page may decompress to.
const CONTENT_LIMIT: usize = 64 * 1024 * 1024;

/// Walk one page.
pub fn page(
    doc: &Document,
    page_id: lopdf::ObjectId,
    cache: &mut FontCache,
    deadline: Instant,
) -> Result<Page, PdfError> {
    let content = doc
        .get_page_content_with_limit(page_id, CONTENT_LIMIT)
        .map_err(|e| PdfError::Broken(format!("a page's content cannot be read: {e}")))?;
    let resources = page_resources(doc, page_id);
    let mut w = Walker {
        doc,
        cache,
        page: Page::default(),
        font_index: HashMap::new(),
        deadline,
        ops: 0,
        marks: Vec::new(),
    };
    let state = State {
        ctm: IDENTITY,
        font: None,
        size: 0.0,
        char_space: 0.0,
        word_space: 0.0,
        scale: 1.0,
        leading: 0.0,
        rise: 0.0,
    };
    w.run(&content, &resources, state, 0)?;
    Ok(w.page)
}

/// The page's resources, merged from the page and its ancestors (the nearest wins).
fn page_resources(doc: &Document, page_id: lopdf::ObjectId) -> Dictionary {
    let mut out = Dictionary::new();
    if let Ok((direct, ids)) = doc.get_page_resources(page_id) {
        let mut all: Vec<&Dictionary> = direct.into_iter().collect();
        all.extend(ids.iter().filter_map(|id| doc.get_dictionary(*id).ok()));
        for d in all {
            for (k, v) in d.iter() {
                if !out.has(k) {
                    out.set(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

impl Walker<'_> {
    fn run(
        &mut self,
        content: &[u8],
        resources: &Dictionary,
        mut gs: State,
        depth: usize,
    ) -> Result<(), PdfError> {
        let ops = Content::decode(content)
            .map_err(|e| PdfError::Broken(format!("a page's content cannot be parsed: {e}")))?
            .operations;
        let mut stack: Vec<State> = Vec::new();
        let mut tm = IDENTITY;
        let mut tlm = IDENTITY;
        for op in &ops {
            self.ops += 1;
            if self.ops.is_multiple_of(4096) && Instant::now() > self.deadline {
                return Err(PdfError::TooSlow);
            }
            let a = &op.operands;
            let n = |i: usize| a.get(i).and_then(number).unwrap_or(0.0);
            match op.operator.as_str() {
                "q" if stack.len() < 256 => stack.push(gs.clone()),
                "Q" => {
                    if let Some(s) = stack.pop() {
                        gs = s;
                    }
                }
                "cm" => gs.ctm = mul(&[n(0), n(1), n(2), n(3), n(4), n(5)], &gs.ctm),
                "BT" => {
                    tm = IDENTITY;
                    tlm = IDENTITY;
                }
                "Tf" => {
                    gs.size = n(1);
                    gs.font = match a.first() {
                        Some(Object::Name(name)) => self.font(resources, name),
                        _ => None,
                    };
                }
                "Tc" => gs.char_space = n(0),
                "Tw" => gs.word_space = n(0),
                "Tz" => gs.scale = n(0) / 100.0,
                "TL" => gs.leading = n(0),
                "Ts" => gs.rise = n(0),
                "Td" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, n(0), n(1)], &tlm);
                    tm = tlm;
                }
                "TD" => {
                    gs.leading = -n(1);
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, n(0), n(1)], &tlm);
                    tm = tlm;
                }
                "Tm" => {
                    tlm = [n(0), n(1), n(2), n(3), n(4), n(5)];
                    tm = tlm;
                }
                "T*" => {
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.leading], &tlm);
                    tm = tlm;
                }
                "Tj" => {
                    if let Some(Object::String(s, _)) = a.first() {
                        self.show(&gs, &mut tm, s);
                    }
                }
                "'" | "\"" => {
                    if op.operator == "\"" {
                        gs.word_space = n(0);
                        gs.char_space = n(1);
                    }
                    tlm = mul(&[1.0, 0.0, 0.0, 1.0, 0.0, -gs.leading], &tlm);
                    tm = tlm;
                    if let Some(Object::String(s, _)) = a.last() {
                        self.show(&gs, &mut tm, s);
                    }
                }
                "TJ" => {
                    if let Some(Object::Array(items)) = a.first() {
                        for item in items {
                            match item {
                                Object::String(s, _) => self.show(&gs, &mut tm, s),
                                o => {
                                    if let Some(adj) = number(o) {
                                        let tx = -adj / 1000.0 * gs.size * gs.scale;
                                        tm = mul(&[1.0, 0.0, 0.0, 1.0, tx, 0.0], &tm);
                                    }
                                }
                            }
                        }
                    }
                }
                "BMC" => self.marks.push(None),
                "BDC" => {
                    let props = match a.get(1) {
                        Some(Object::Dictionary(d)) => Some(d.clone()),
                        Some(Object::Name(name)) => resources
                            .get(b"Properties")
                            .ok()
                            .and_then(|o| dict(self.doc, o))
                            .and_then(|p| p.get(name).ok())
                            .and_then(|o| dict(self.doc, o))
                            .cloned(),
                        _ => None,
                    };
                    let actual = props
                        .as_ref()
                        .and_then(|p| p.get(b"ActualText").ok())
                        .and_then(|o| match deref(self.doc, o) {
                            Object::String(s, _) => Some(text_string(s)),
                            _ => None,
                        });
                    // A span inside a span: the outer one's text covers it.
                    let inside = self.marks.iter().any(Option::is_some);
                    match actual {
                        Some(t) if !inside => {
                            self.page.spans.push(t);
                            self.marks.push(Some(self.page.spans.len() - 1));
                        }
                        _ => self.marks.push(None),
                    }
                }
                "EMC" => {
                    self.marks.pop();
                }
                "Do" => {
                    if let Some(Object::Name(name)) = a.first() {
                        self.xobject(resources, name, &gs, depth)?;
                    }
                }
                "BI" | "ID" => self.page.images += 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn xobject(
        &mut self,
        resources: &Dictionary,
        name: &[u8],
        gs: &State,
        depth: usize,
    ) -> Result<(), PdfError> {
        let Some(obj) = resources
            .get(b"XObject")
            .ok()
            .and_then(|o| dict(self.doc, o))
            .and_then(|x| x.get(name).ok())
        else {
            return Ok(());
        };
        let Object::Stream(s) = deref(self.doc, obj) else {
            return Ok(());
        };
        match s.dict.get(b"Subtype") {
            Ok(Object::Name(t)) if t == b"Image" => self.page.images += 1,
            Ok(Object::Name(t)) if t == b"Form" && depth < MAX_DEPTH => {
                let Some(content) = stream_bytes(self.doc, obj, CONTENT_LIMIT) else {
                    return Ok(());
                };
                let mut inner = gs.clone();
                if let Ok(Object::Array(m)) = s.dict.get(b"Matrix") {
                    let m: Vec<f32> = m.iter().filter_map(number).collect();
                    if let [a, b, c, d, e, f] = m[..] {
                        inner.ctm = mul(&[a, b, c, d, e, f], &inner.ctm);
                    }
                }
                let res = s
                    .dict
                    .get(b"Resources")
                    .ok()
                    .and_then(|o| dict(self.doc, o))
                    .cloned()
                    .unwrap_or_else(|| resources.clone());
                self.run(&content, &res, inner, depth + 1)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn font(&mut self, resources: &Dictionary, name: &[u8]) -> Option<usize> {
        let fonts = resources
            .get(b"Font")
            .ok()
            .and_then(|o| dict(self.doc, o))?;
        let obj = fonts.get(name).ok()?;
        let font = match obj {
            Object::Reference(id) => {
                if let Some(f) = self.cache.by_id.get(id) {
                    f.clone()
                } else {
                    let d = self.doc.get_dictionary(*id).ok()?;
                    let f = Rc::new(Font::load(self.doc, d));
                    self.cache.by_id.insert(*id, f.clone());
                    f
                }
            }
            Object::Dictionary(d) => Rc::new(Font::load(self.doc, d)),
            _ => return None,
        };
        let key = Rc::as_ptr(&font);
        if let Some(&i) = self.font_index.get(&key) {
            return Some(i);
        }
        self.page.fonts.push(font);
        let i = self.page.fonts.len() - 1;
        self.font_index.insert(key, i);
        Some(i)
    }

    fn show(&mut self, gs: &State, tm: &mut Matrix, bytes: &[u8]) {
        let Some(fi) = gs.font else {
            return;
        };
        let font = self.page.fonts[fi].clone();
        let span = self.marks.iter().rev().find_map(|m| *m);
        for code in font.codes(bytes) {
            let trm = mul(tm, &gs.ctm);
            let x = gs.rise * trm[2] + trm[4];
            let y = gs.rise * trm[3] + trm[5];
            let scale_y = (trm[2] * trm[2] + trm[3] * trm[3]).sqrt();
            let scale_x = (trm[0] * trm[0] + trm[1] * trm[1]).sqrt();
            let w0 = font.width(code) / 1000.0;
            let word = if !font.two_byte && code == 32 {
                gs.word_space
            } else {
                0.0
            };
            let tx = (w0 * gs.size + gs.char_space + word) * gs.scale;
            self.page.glyphs.push(Glyph {
                x,
                y,
                w: tx * scale_x,
                size: (gs.size * scale_y).abs(),
                font: fi,
                code,
                span,
            });
            *tm = mul(&[1.0, 0.0, 0.0, 1.0, tx, 0.0], tm);
        }
    }
}

/// A PDF text string: UTF-16BE with its BOM, UTF-8 with its BOM, else
/// PDFDocEncoding (ASCII-compatible; the rest read as Latin-1).
pub fn text_string(s: &[u8]) -> String {
    if let Some(rest) = s.strip_prefix(&[0xFE, 0xFF]) {
        return crate::cmap::utf16be(rest);
    }
    if let Some(rest) = s.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(rest).into_owned();
    }
    s.iter().map(|&b| char::from(b)).collect()
}
