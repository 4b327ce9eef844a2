//! Fonts of a page: how a shown string splits into codes, each code's width,
//! glyph id and text.

use std::collections::HashMap;

use lopdf::{Dictionary, Document, Object};

use crate::cmap::ToUnicode;

/// What the walker needs of one font.
#[derive(Debug)]
pub struct Font {
    /// Codes are two bytes (Type0 fonts) instead of one.
    pub two_byte: bool,
    to_unicode: ToUnicode,
    widths: HashMap<u32, f32>,
    default_width: f32,
    /// Code to glyph id, for Type0 fonts whose CIDs are glyph ids.
    identity_gids: bool,
    cid_to_gid: Option<Vec<u16>>,
    /// For simple fonts without a map: code to text by the encoding.
    simple_names: HashMap<u32, String>,
    /// The embedded font program (TrueType or OpenType), when there is one.
    pub program: Option<Vec<u8>>,
    /// The font belongs to the Tibetan Machine family (its private-use code
    /// points are known).
    pub tibetan_machine: bool,
}

/// Follow references.
pub fn deref<'a>(doc: &'a Document, o: &'a Object) -> &'a Object {
    doc.dereference(o).map(|(_, o)| o).unwrap_or(o)
}

pub fn dict<'a>(doc: &'a Document, o: &'a Object) -> Option<&'a Dictionary> {
    match deref(doc, o) {
        Object::Dictionary(d) => Some(d),
        Object::Stream(s) => Some(&s.dict),
        _ => None,
    }
}

pub fn number(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
}

fn name(o: &Object) -> Option<&[u8]> {
    match o {
        Object::Name(n) => Some(n),
        _ => None,
    }
}

/// The bytes of a stream, decompressed within `limit`.
pub fn stream_bytes(doc: &Document, o: &Object, limit: usize) -> Option<Vec<u8>> {
    match deref(doc, o) {
        Object::Stream(s) => {
            if s.dict.get(b"Filter").is_ok() {
                s.decompressed_content_with_limit(limit).ok()
            } else {
                Some(s.content.clone())
            }
        }
        _ => None,
    }
}

const STREAM_LIMIT: usize = 64 * 1024 * 1024;

impl Font {
    /// Read a font dictionary. Whatever is missing or broken is left out:
    /// the codes it affects have no text, which the checks count.
    pub fn load(doc: &Document, d: &Dictionary) -> Font {
        let subtype = d.get(b"Subtype").ok().and_then(name).unwrap_or(b"");
        let base = d
            .get(b"BaseFont")
            .ok()
            .and_then(name)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let font_name = match base.split_once('+') {
            Some((tag, rest)) if tag.len() == 6 => rest.to_owned(),
            _ => base,
        };
        let squashed: String = font_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let tibetan_machine = squashed.starts_with("tibetanmachine");
        let to_unicode = d
            .get(b"ToUnicode")
            .ok()
            .and_then(|o| stream_bytes(doc, o, STREAM_LIMIT))
            .map(|b| ToUnicode::parse(&b))
            .unwrap_or_default();
        let mut font = Font {
            two_byte: subtype == b"Type0",
            to_unicode,
            widths: HashMap::new(),
            default_width: 1000.0,
            identity_gids: false,
            cid_to_gid: None,
            simple_names: HashMap::new(),
            program: None,
            tibetan_machine,
        };
        if subtype == b"Type0" {
            let desc = d
                .get(b"DescendantFonts")
                .ok()
                .map(|o| deref(doc, o))
                .and_then(|o| match o {
                    Object::Array(a) => a.first(),
                    _ => None,
                })
                .and_then(|o| dict(doc, o));
            if let Some(desc) = desc {
                font.default_width = desc.get(b"DW").ok().and_then(number).unwrap_or(1000.0);
                if let Ok(Object::Array(w)) = desc.get(b"W").map(|o| deref(doc, o)) {
                    font.read_cid_widths(doc, w);
                }
                let cff = desc.get(b"Subtype").ok().and_then(name) == Some(&b"CIDFontType0"[..]);
                match desc.get(b"CIDToGIDMap").map(|o| deref(doc, o)) {
                    Ok(Object::Stream(_)) => {
                        font.cid_to_gid = desc
                            .get(b"CIDToGIDMap")
                            .ok()
                            .and_then(|o| stream_bytes(doc, o, STREAM_LIMIT))
                            .map(|b| {
                                b.chunks(2)
                                    .map(|p| {
                                        (u16::from(p[0]) << 8)
                                            | u16::from(p.get(1).copied().unwrap_or(0))
                                    })
                                    .collect()
                            });
                    }
                    _ => font.identity_gids = !cff,
                }
                font.program = descriptor_program(doc, desc);
            }
        } else {
            font.default_width = 500.0;
            let first = d.get(b"FirstChar").ok().and_then(number).unwrap_or(0.0) as u32;
            if let Ok(Object::Array(w)) = d.get(b"Widths").map(|o| deref(doc, o)) {
                for (i, o) in w.iter().enumerate() {
                    if let Some(v) = number(deref(doc, o)) {
                        font.widths.insert(first + i as u32, v);
                    }
                }
            }
            font.read_simple_encoding(doc, d);
            font.program = descriptor_program(doc, d);
        }
        font
    }

    fn read_cid_widths(&mut self, doc: &Document, w: &[Object]) {
        let mut i = 0;
        while i < w.len() && self.widths.len() < 200_000 {
            let Some(first) = number(deref(doc, &w[i])) else {
                break;
            };
            match w.get(i + 1).map(|o| deref(doc, o)) {
                Some(Object::Array(ws)) => {
                    for (k, o) in ws.iter().enumerate() {
                        if let Some(v) = number(deref(doc, o)) {
                            self.widths.insert(first as u32 + k as u32, v);
                        }
                    }
                    i += 2;
                }
                Some(o) => {
                    let (Some(last), Some(v)) =
                        (number(o), w.get(i + 2).and_then(|o| number(deref(doc, o))))
                    else {
                        break;
                    };
                    let (first, last) = (first as u32, last as u32);
                    if last >= first && last - first <= 65_535 {
                        for c in first..=last {
                            self.widths.insert(c, v);
                        }
                    }
                    i += 3;
                }
                None => break,
            }
        }
    }

    fn read_simple_encoding(&mut self, doc: &Document, d: &Dictionary) {
        let Ok(enc) = d.get(b"Encoding").map(|o| deref(doc, o)) else {
            return;
        };
        let Object::Dictionary(enc) = enc else {
            return;
        };
        if let Ok(Object::Array(diffs)) = enc.get(b"Differences").map(|o| deref(doc, o)) {
            let mut code = 0u32;
            for o in diffs {
                match o {
                    Object::Integer(n) => code = *n as u32,
                    Object::Name(n) => {
                        if let Some(t) = glyph_name_text(&String::from_utf8_lossy(n)) {
                            self.simple_names.insert(code, t);
                        }
                        code += 1;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Split a shown string into codes.
    pub fn codes(&self, bytes: &[u8]) -> Vec<u32> {
        if self.two_byte {
            bytes
                .chunks(2)
                .map(|p| (u32::from(p[0]) << 8) | u32::from(p.get(1).copied().unwrap_or(0)))
                .collect()
        } else {
            bytes.iter().map(|&b| u32::from(b)).collect()
        }
    }

    /// A code's advance in thousandths of the font size.
    pub fn width(&self, code: u32) -> f32 {
        self.widths
            .get(&code)
            .copied()
            .unwrap_or(self.default_width)
    }

    /// A code's glyph id, when the font says it.
    pub fn gid(&self, code: u32) -> Option<u16> {
        if let Some(map) = &self.cid_to_gid {
            return map.get(code as usize).copied();
        }
        (self.identity_gids && self.two_byte).then_some(code as u16)
    }

    /// A code's text as the file gives it (ToUnicode, else the encoding).
    pub fn text(&self, code: u32) -> Option<&str> {
        if let Some(t) = self.to_unicode.get(code) {
            return Some(t);
        }
        if let Some(t) = self.simple_names.get(&code) {
            return Some(t);
        }
        if !self.two_byte && self.to_unicode.is_empty() {
            // The standard encodings agree on printable ASCII.
            return ascii(code);
        }
        None
    }
}

/// Printable ASCII (codes 32 to 126), in code order.
const PRINTABLE: &str = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

/// A printable ASCII code as text.
fn ascii(code: u32) -> Option<&'static str> {
    let i = usize::try_from(code.checked_sub(32)?).ok()?;
    PRINTABLE.get(i..i + 1)
}

/// Text of a glyph name: `uniXXXX[XXXX…]`, `uXXXX`, or a few common names.
pub fn glyph_name_text(n: &str) -> Option<String> {
    let base = n.split('.').next().unwrap_or(n);
    if let Some(hex) = base.strip_prefix("uni")
        && hex.len() >= 4
        && hex.len() % 4 == 0
    {
        let units: Option<Vec<u16>> = (0..hex.len())
            .step_by(4)
            .map(|i| u16::from_str_radix(&hex[i..i + 4], 16).ok())
            .collect();
        return units.map(|u| {
            char::decode_utf16(u)
                .map(|c| c.unwrap_or('\u{FFFD}'))
                .collect()
        });
    }
    if let Some(hex) = base.strip_prefix('u')
        && (4..=6).contains(&hex.len())
        && let Some(c) = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
    {
        return Some(c.to_string());
    }
    let t = match base {
        "space" => " ",
        "period" => ".",
        "comma" => ",",
        "hyphen" => "-",
        _ if base.len() == 1 && base.is_ascii() => base,
        _ => return None,
    };
    Some(t.to_owned())
}

fn descriptor_program(doc: &Document, d: &Dictionary) -> Option<Vec<u8>> {
    let fd = d.get(b"FontDescriptor").ok().and_then(|o| dict(doc, o))?;
    for key in [&b"FontFile2"[..], b"FontFile3"] {
        if let Ok(o) = fd.get(key)
            && let Some(b) = stream_bytes(doc, o, STREAM_LIMIT)
        {
            return Some(b);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyph_names() {
        assert_eq!(
            glyph_name_text("uni0F630FA1").as_deref(),
            Some("\u{0F63}\u{0FA1}")
        );
        assert_eq!(glyph_name_text("uni0F40.alt").as_deref(), Some("\u{0F40}"));
        assert_eq!(glyph_name_text("u1F600").as_deref(), Some("\u{1F600}"));
        assert_eq!(glyph_name_text("space").as_deref(), Some(" "));
        assert_eq!(glyph_name_text("a").as_deref(), Some("a"));
        assert_eq!(glyph_name_text("terton.mark01"), None);
        assert_eq!(ascii(65), Some("A"));
        assert_eq!(ascii(126), Some("~"));
        assert_eq!(ascii(32), Some(" "));
        assert_eq!(ascii(127), None);
        assert_eq!(ascii(31), None);
    }
}
