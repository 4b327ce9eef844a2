//! Recovering the Unicode of glyphs whose text layer is broken: the known
//! private-use code points of the Tibetan Machine family, and a glyph map
//! read back from the font's own shaping tables.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Private-use code points of Tibetan Machine Uni and the text each draws.
static TMU: &str = include_str!("../data/tmu-pua.tsv");

fn tmu() -> &'static HashMap<char, String> {
    static MAP: OnceLock<HashMap<char, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        TMU.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (cp, seq) = l.split_once('\t')?;
                let cp = char::from_u32(u32::from_str_radix(cp.trim(), 16).ok()?)?;
                let text: Option<String> = seq
                    .split_whitespace()
                    .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
                    .collect();
                Some((cp, text?))
            })
            .collect()
    })
}

/// Whether `c` is a private-use code point.
pub fn is_private(c: char) -> bool {
    matches!(c, '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}')
}

/// Replace the Tibetan Machine private-use code points of `s`; `None` when
/// one of them is not known.
pub fn tibetan_machine(s: &str) -> Option<String> {
    let map = tmu();
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if is_private(c) {
            out.push_str(map.get(&c)?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Glyph sequences of one font and the text each one draws, read by shaping
/// Tibetan clusters with the font's own tables.
#[derive(Debug, Default)]
pub struct GlyphMap {
    single: HashMap<u16, char>,
    seqs: HashMap<Vec<u16>, String>,
    longest: usize,
}

/// Vowel signs and marks a cluster may end with.
const VOWELS: &[&str] = &[
    "",
    "\u{0F72}",
    "\u{0F74}",
    "\u{0F7A}",
    "\u{0F7C}",
    "\u{0F7B}",
    "\u{0F7D}",
    "\u{0F80}",
    "\u{0F71}",
    "\u{0F71}\u{0F72}",
    "\u{0F71}\u{0F74}",
    "\u{0F71}\u{0F80}",
    "\u{0F7E}",
    "\u{0F72}\u{0F7E}",
    "\u{0F7C}\u{0F7E}",
    "\u{0F82}",
    "\u{0F83}",
    "\u{0F71}\u{0F7E}",
];

/// Letters that take a second subjoined letter after a first one.
const SECOND: &[char] = &['\u{0FB1}', '\u{0FB2}', '\u{0FB3}', '\u{0FAD}'];

/// Most clusters one font's map is built from.
const MAX_CLUSTERS: usize = 60_000;

impl GlyphMap {
    /// Shape the Tibetan clusters the font can draw (its cmap decides which
    /// letters) and keep each cluster's glyph ids. `None` when the program
    /// cannot be read.
    pub fn build(program: &[u8]) -> Option<GlyphMap> {
        let font = harfrust::Font::new(program.to_vec(), 0)?;
        let shaper = harfrust::ShaperFont::new(&font);
        let has = |c: char| shaper.nominal_glyph(c as u32).is_some();
        let bases: Vec<char> = ('\u{0F40}'..='\u{0F6C}')
            .chain('\u{0F88}'..='\u{0F8C}')
            .filter(|&c| has(c))
            .collect();
        if bases.is_empty() {
            return None;
        }
        let subs: Vec<char> = ('\u{0F90}'..='\u{0FBC}').filter(|&c| has(c)).collect();
        let vowels: Vec<&str> = VOWELS
            .iter()
            .copied()
            .filter(|v| v.chars().all(has))
            .collect();
        let mut clusters: Vec<String> = Vec::new();
        'outer: for &b in &bases {
            for v in &vowels {
                clusters.push(format!("{b}{v}"));
            }
            for &s in &subs {
                for v in &vowels {
                    clusters.push(format!("{b}{s}{v}"));
                }
                for &t in SECOND.iter().filter(|&&t| has(t) && t != s) {
                    for v in &vowels {
                        clusters.push(format!("{b}{s}{t}{v}"));
                    }
                }
                if clusters.len() > MAX_CLUSTERS {
                    break 'outer;
                }
            }
        }
        let mut map = GlyphMap::default();
        // The nominal glyph of each character first: nothing overwrites them.
        for c in ('\u{0F00}'..='\u{0FFF}').chain([' ']) {
            if let Some(g) = shaper.nominal_glyph(c as u32) {
                map.single.entry(g.to_u32() as u16).or_insert(c);
            }
        }
        // A whole font: only base and vowel clusters are shaped in context.
        let big = clusters.len() > 5_000;
        let mut buffer = harfrust::Buffer::new();
        // Each cluster alone, then before a few letters with vowels: a font
        // draws a vowel differently when the next cluster has one too.
        let mut follows: Vec<String> = vec![String::new()];
        for b in ['\u{0F60}', '\u{0F66}', '\u{0F58}']
            .into_iter()
            .chain(bases.first().copied())
            .filter(|&c| has(c))
        {
            for v in &vowels {
                follows.push(format!("{b}{v}"));
            }
        }
        for follow in &follows {
            for cluster in &clusters {
                if !follow.is_empty() && cluster.chars().count() > 3 - usize::from(big) {
                    continue;
                }
                let text = format!("{cluster}{follow}");
                buffer.clear();
                buffer.push_str(&text);
                buffer.guess_segment_properties();
                if harfrust::shape(&shaper, &mut buffer, harfrust::ShapeOptions::new()).is_err() {
                    continue;
                }
                map.record(&text, buffer.glyph_infos());
            }
        }
        Some(map)
    }

    /// Keep the glyphs of each cluster of a shaped text; where a cluster
    /// has as many glyphs as characters, each glyph's character too.
    fn record(&mut self, text: &str, infos: &[harfrust::GlyphInfo]) {
        let mut i = 0;
        while i < infos.len() {
            let start = infos[i].cluster as usize;
            let mut j = i;
            while j < infos.len() && infos[j].cluster as usize == start {
                j += 1;
            }
            let end = infos.get(j).map_or(text.len(), |g| g.cluster as usize);
            let Some(part) = text.get(start..end.max(start)) else {
                return;
            };
            let ids: Vec<u16> = infos[i..j].iter().map(|g| g.glyph_id as u16).collect();
            if ids.contains(&0) || part.is_empty() {
                i = j;
                continue;
            }
            if ids.len() == part.chars().count() {
                for (g, c) in ids.iter().zip(part.chars()) {
                    self.single.entry(*g).or_insert(c);
                }
            }
            if ids.len() > 1 {
                self.longest = self.longest.max(ids.len());
                self.seqs.entry(ids).or_insert_with(|| part.to_owned());
            }
            i = j;
        }
    }

    /// Text of a run of glyph ids: the longest known sequence at each step,
    /// else the text the file gives, else the glyph's character; `None`
    /// when some glyph is in none.
    pub fn decode(&self, ids: &[u16], given: &[Option<String>]) -> Option<String> {
        let mut out = String::new();
        let mut i = 0;
        while i < ids.len() {
            let max = self.longest.min(ids.len() - i);
            if let Some((n, t)) = (2..=max)
                .rev()
                .find_map(|n| self.seqs.get(&ids[i..i + n]).map(|t| (n, t)))
            {
                out.push_str(t);
                i += n;
                continue;
            }
            match (
                given.get(i).and_then(Option::as_deref),
                self.single.get(&ids[i]),
            ) {
                (Some(t), _) => out.push_str(t),
                (None, Some(c)) => out.push(*c),
                (None, None) => return None,
            }
            i += 1;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tibetan_machine_code_points() {
        assert_eq!(tibetan_machine("\u{F460}ན").as_deref(), Some("ལྡན"));
        assert_eq!(tibetan_machine("ཀ").as_deref(), Some("ཀ"));
        assert_eq!(tibetan_machine("\u{E000}"), None);
        assert!(tmu().len() > 300);
    }

    #[test]
    fn garbage_is_no_font() {
        assert!(GlyphMap::build(b"not a font").is_none());
    }
}
