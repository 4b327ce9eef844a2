//! Whether extracted Tibetan is text: syllables are well formed and no
//! private-use or control character is left.

use lotsawa_core::segment::{is_shad, is_tsheg};

use crate::recover::is_private;

fn letter(c: char) -> bool {
    matches!(c, '\u{0F40}'..='\u{0F6C}' | '\u{0F88}'..='\u{0F8C}')
}

fn subjoined(c: char) -> bool {
    matches!(c, '\u{0F8D}'..='\u{0FBC}')
}

fn vowel_or_mark(c: char) -> bool {
    matches!(
        c,
        '\u{0F71}'
            ..='\u{0F87}'
                | '\u{0F35}'
                | '\u{0F37}'
                | '\u{0F39}'
                | '\u{0F3E}'
                | '\u{0F3F}'
                | '\u{0FC6}'
    )
}

/// A character that is never text: private use, a control other than
/// line and page breaks and tabs, a replacement character, a NUL.
pub fn is_junk(c: char) -> bool {
    is_private(c)
        || c == '\u{FFFD}'
        || (c.is_control() && !matches!(c, '\n' | '\t' | '\u{000C}' | '\r'))
}

/// Syllables of the Tibetan in `text` and how many of them are malformed,
/// with the first malformed one.
pub fn syllables(text: &str) -> (usize, usize, Option<String>) {
    let mut total = 0;
    let mut bad = 0;
    let mut example = None;
    let mut count = |syl: &str| {
        if syl.is_empty() {
            return;
        }
        let tib = syl.chars().any(|c| ('\u{0F00}'..='\u{0FFF}').contains(&c));
        let junk = syl.chars().any(is_junk);
        if !tib && !junk {
            return;
        }
        total += 1;
        if junk || !well_formed(syl) {
            bad += 1;
            if example.is_none() {
                example = Some(syl.escape_debug().to_string());
            }
        }
    };
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if is_tsheg(c) || c == '\u{0F0C}' || is_shad(c) || c.is_whitespace() {
            count(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    count(&text[start..]);
    (total, bad, example)
}

/// A syllable's marks follow letters: no vowel or subjoined letter starts it
/// or follows something that is not a letter.
fn well_formed(syl: &str) -> bool {
    let mut prev: Option<char> = None;
    for c in syl.chars() {
        let ok = if subjoined(c) {
            prev.is_some_and(|p| letter(p) || subjoined(p))
        } else if vowel_or_mark(c) {
            prev.is_some_and(|p| {
                letter(p)
                    || subjoined(p)
                    || vowel_or_mark(p)
                    || p.is_ascii_digit()
                    || ('\u{0F20}'..='\u{0F33}').contains(&p)
            })
        } else {
            true
        };
        if !ok {
            return false;
        }
        prev = Some(c);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_malformed_syllables() {
        assert_eq!(syllables("བཅོམ་ལྡན་འདས། hello"), (3, 0, None));
        let (n, bad, ex) = syllables("བཅོམ་\u{F460}ན་ོམ་ཀ\0།");
        assert_eq!((n, bad), (4, 3));
        assert_eq!(ex.as_deref(), Some("\\u{f460}ན"));
    }
}
