//! ToUnicode CMaps (ISO 32000-1, 9.10.3): character code to Unicode text.

use std::collections::HashMap;

/// A parsed ToUnicode map.
#[derive(Debug, Default, Clone)]
pub struct ToUnicode {
    map: HashMap<u32, String>,
}

/// Most entries one map may hold (a range of 65,536 codes is the largest
/// sensible one; a hostile file asks for more).
const MAX_ENTRIES: usize = 200_000;

enum Token<'a> {
    Hex(Vec<u8>),
    Int,
    Word(&'a [u8]),
    Open,
    Close,
}

fn tokens(data: &[u8]) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        match c {
            b'%' => {
                while i < data.len() && data[i] != b'\n' && data[i] != b'\r' {
                    i += 1;
                }
            }
            b'<' if data.get(i + 1) == Some(&b'<') => i += 2,
            b'>' if data.get(i + 1) == Some(&b'>') => i += 2,
            b'<' => {
                let start = i + 1;
                let mut end = start;
                while end < data.len() && data[end] != b'>' {
                    end += 1;
                }
                out.push(Token::Hex(hex(&data[start..end])));
                i = end + 1;
            }
            b'[' => {
                out.push(Token::Open);
                i += 1;
            }
            b']' => {
                out.push(Token::Close);
                i += 1;
            }
            b'(' => {
                // Literal strings do not carry mappings; skip them whole.
                let mut depth = 0usize;
                while i < data.len() {
                    match data[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < data.len()
                    && !data[i].is_ascii_whitespace()
                    && !matches!(data[i], b'<' | b'>' | b'[' | b']' | b'(' | b'/' | b'%')
                {
                    i += 1;
                }
                if i == start {
                    i += 1;
                    continue;
                }
                let word = &data[start..i];
                match std::str::from_utf8(word)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(_) => out.push(Token::Int),
                    None => out.push(Token::Word(word)),
                }
            }
        }
    }
    out
}

fn hex(s: &[u8]) -> Vec<u8> {
    let digits: Vec<u8> = s
        .iter()
        .filter_map(|&c| (c as char).to_digit(16).map(|d| d as u8))
        .collect();
    digits
        .chunks(2)
        .map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(0))
        .collect()
}

fn code(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

/// UTF-16BE to text; unpaired surrogates become U+FFFD.
pub fn utf16be(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|p| (u16::from(p[0]) << 8) | u16::from(p.get(1).copied().unwrap_or(0)))
        .collect();
    char::decode_utf16(units)
        .map(|r| r.unwrap_or('\u{FFFD}'))
        .collect()
}

impl ToUnicode {
    /// Parse a CMap stream's (decompressed) bytes. What cannot be read is
    /// skipped: a broken map leaves those codes without text.
    pub fn parse(data: &[u8]) -> Self {
        let toks = tokens(data);
        let mut map = HashMap::new();
        let mut i = 0;
        let mut section: Option<&[u8]> = None;
        while i < toks.len() && map.len() < MAX_ENTRIES {
            match &toks[i] {
                Token::Word(w) if *w == b"beginbfchar" || *w == b"beginbfrange" => {
                    section = Some(w);
                    i += 1;
                }
                Token::Word(w) if *w == b"endbfchar" || *w == b"endbfrange" => {
                    section = None;
                    i += 1;
                }
                Token::Hex(src) if section == Some(b"beginbfchar") => {
                    if let Some(Token::Hex(dst)) = toks.get(i + 1) {
                        map.insert(code(src), utf16be(dst));
                    }
                    i += 2;
                }
                Token::Hex(lo) if section == Some(b"beginbfrange") => {
                    let (Some(Token::Hex(hi)), Some(dst)) = (toks.get(i + 1), toks.get(i + 2))
                    else {
                        i += 1;
                        continue;
                    };
                    let (lo, hi) = (code(lo), code(hi));
                    if hi < lo || hi - lo > 65_535 {
                        i += 3;
                        continue;
                    }
                    match dst {
                        Token::Hex(start) => {
                            for (n, c) in (lo..=hi).enumerate() {
                                let mut d = start.clone();
                                add_to_last(&mut d, n as u32);
                                map.insert(c, utf16be(&d));
                            }
                            i += 3;
                        }
                        Token::Open => {
                            let mut j = i + 3;
                            let mut c = lo;
                            while let Some(Token::Hex(d)) = toks.get(j) {
                                if c <= hi {
                                    map.insert(c, utf16be(d));
                                }
                                c += 1;
                                j += 1;
                            }
                            i = j + 1;
                        }
                        _ => i += 3,
                    }
                }
                _ => i += 1,
            }
        }
        Self { map }
    }

    /// The text of a code, as the map gives it.
    pub fn get(&self, code: u32) -> Option<&str> {
        self.map.get(&code).map(String::as_str)
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Add `n` to the last UTF-16 unit of `d` (a bfrange destination).
fn add_to_last(d: &mut [u8], n: u32) {
    let len = d.len();
    if len < 2 {
        if let Some(b) = d.last_mut() {
            *b = b.wrapping_add(n as u8);
        }
        return;
    }
    let last = (u32::from(d[len - 2]) << 8) | u32::from(d[len - 1]);
    let v = last.wrapping_add(n);
    d[len - 2] = (v >> 8) as u8;
    d[len - 1] = v as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_ranges_and_arrays() {
        let m = ToUnicode::parse(
            b"2 beginbfchar\n<0D36> <0F630FA1>\n<00EA> <0000>\nendbfchar\n\
              1 beginbfrange\n<0010> <0012> <0F40>\nendbfrange\n\
              1 beginbfrange <20> <21> [<0041> <D835DC00>] endbfrange",
        );
        assert_eq!(m.get(0x0D36), Some("\u{0F63}\u{0FA1}"));
        assert_eq!(m.get(0x00EA), Some("\0"));
        assert_eq!(m.get(0x0011), Some("\u{0F41}"));
        assert_eq!(m.get(0x0012), Some("\u{0F42}"));
        assert_eq!(m.get(0x21), Some("\u{1D400}"));
        assert_eq!(m.get(0x13), None);
    }

    #[test]
    fn garbage_gives_an_empty_map() {
        assert!(ToUnicode::parse(b"<<< [[ ( ) beginbfrange <ff> endbfchar").is_empty());
        assert!(ToUnicode::parse(b"beginbfrange <0000> <FFFFFF> <0041> endbfrange").is_empty());
    }
}
