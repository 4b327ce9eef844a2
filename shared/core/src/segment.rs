//! The Tibetan segmenter: splits a text into chunks at sentence boundaries.
//!
//! Rules, in order of preference:
//! - a sentence ends at a shad (། ༎ ༏ ༐ ༑ ༔) or a line break, once it holds
//!   some letter or digit; the punctuation, spaces and blank lines that follow
//!   stay with it, so head marks (༄༅) and the opening shad of the next verse
//!   stay with what follows;
//! - whole sentences are packed greedily up to `chunk_size` characters;
//! - a sentence longer than that is split only at syllable boundaries (after a
//!   tsheg ་ or whitespace), never before a combining mark;
//! - a single syllable longer than `chunk_size` is kept whole.
//!
//! Every character is kept: concatenating the chunks gives the input back.

/// Shad and its variants: sentence-final punctuation.
pub fn is_shad(c: char) -> bool {
    matches!(
        c,
        '\u{0F0D}' | '\u{0F0E}' | '\u{0F0F}' | '\u{0F10}' | '\u{0F11}' | '\u{0F14}'
    )
}

/// The intersyllabic tsheg (the non-breaking tsheg U+0F0C is not a break).
pub fn is_tsheg(c: char) -> bool {
    c == '\u{0F0B}'
}

/// Marks that must never start a chunk: they combine with what precedes.
pub fn is_combining(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FE20}'..='\u{FE2F}'
        | '\u{200C}' | '\u{200D}'
        | '\u{0F18}'..='\u{0F19}'
        | '\u{0F35}' | '\u{0F37}' | '\u{0F39}'
        | '\u{0F3E}'..='\u{0F3F}'
        | '\u{0F71}'..='\u{0F84}'
        | '\u{0F86}'..='\u{0F87}'
        | '\u{0F8D}'..='\u{0FBC}'
        | '\u{0FC6}')
}

fn is_content(c: char) -> bool {
    c.is_alphanumeric()
}

/// Whether `c` stays with the sentence it follows (trailing punctuation,
/// tshegs, whitespace, blank lines, combining marks).
fn trails(c: char) -> bool {
    is_shad(c) || is_tsheg(c) || c == '\u{0F0C}' || c.is_whitespace() || is_combining(c)
}

/// Split `text` into sentences (byte ranges covering the whole text).
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut has_content = false;
    let mut it = text.char_indices().peekable();
    while let Some((_, c)) = it.next() {
        // Once a sentence has content, only its end is looked for.
        if !has_content {
            has_content = is_content(c);
            if !has_content {
                continue;
            }
        }
        if is_shad(c) || c == '\n' {
            let mut end = text.len();
            while let Some(&(j, d)) = it.peek() {
                if trails(d) {
                    it.next();
                } else {
                    end = j;
                    break;
                }
            }
            out.push(&text[start..end]);
            start = end;
            has_content = false;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Split one sentence into syllables: each ends after its tsheg or whitespace
/// run, and none begins with a combining mark.
pub fn syllables(sentence: &str) -> Vec<&str> {
    let breaks = |c: char| is_tsheg(c) || c.is_whitespace();
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut it = sentence.char_indices().peekable();
    while let Some((_, c)) = it.next() {
        if !breaks(c) {
            continue;
        }
        while it.peek().is_some_and(|&(_, d)| breaks(d)) {
            it.next();
        }
        if let Some(&(j, d)) = it.peek()
            && !is_combining(d)
        {
            out.push(&sentence[start..j]);
            start = j;
        }
    }
    if start < sentence.len() {
        out.push(&sentence[start..]);
    }
    out
}

/// Split `text` into chunks of at most `chunk_size` characters where the rules
/// above allow it. Returns no chunk for empty text.
pub fn segment(text: &str, chunk_size: usize) -> Vec<&str> {
    let max = chunk_size.max(1);
    let mut chunks = Vec::new();
    // A chunk is a contiguous byte range [from, to) of `text`.
    let mut from = 0usize;
    let mut to = 0usize;
    let mut len = 0usize;
    let base = text.as_ptr() as usize;
    let offset = |s: &str| s.as_ptr() as usize - base;

    for sentence in sentences(text) {
        let s_len = sentence.chars().count();
        let s_from = offset(sentence);
        if s_len > max {
            if to > from {
                chunks.push(&text[from..to]);
            }
            // Pack the oversized sentence's syllables on their own.
            let mut p_from = s_from;
            let mut p_to = s_from;
            let mut p_len = 0usize;
            for syl in syllables(sentence) {
                let l = syl.chars().count();
                if p_len > 0 && p_len + l > max {
                    chunks.push(&text[p_from..p_to]);
                    p_from = p_to;
                    p_len = 0;
                }
                p_to = offset(syl) + syl.len();
                p_len += l;
            }
            if p_to > p_from {
                chunks.push(&text[p_from..p_to]);
            }
            from = s_from + sentence.len();
            to = from;
            len = 0;
            continue;
        }
        if len > 0 && len + s_len > max {
            chunks.push(&text[from..to]);
            from = to;
            len = 0;
        }
        to = s_from + sentence.len();
        len += s_len;
    }
    if to > from {
        chunks.push(&text[from..to]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODHICARYAVATARA: &str = "༄༅། །བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ་བཞུགས་སོ། །\n\
        བདེ་གཤེགས་ཆོས་ཀྱི་སྐུ་མངའ་སྲས་བཅས་དང་། །ཕྱག་འོས་ཀུན་ལའང་གུས་པར་ཕྱག་འཚལ་ཏེ། །\n\
        བདེ་གཤེགས་སྲས་ཀྱི་སྡོམ་ལ་འཇུག་པ་ནི། །ལུང་བཞིན་མདོར་བསྡུས་ནས་ནི་བརྗོད་པར་བྱ། །\n";

    fn joined(chunks: &[&str]) -> String {
        chunks.concat()
    }

    #[test]
    fn sentences_keep_head_marks_with_what_follows() {
        let s = sentences(BODHICARYAVATARA);
        assert_eq!(s[0], "༄༅། །བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ་བཞུགས་སོ། །\n");
        assert_eq!(s[1], "བདེ་གཤེགས་ཆོས་ཀྱི་སྐུ་མངའ་སྲས་བཅས་དང་། །");
        assert_eq!(s[2], "ཕྱག་འོས་ཀུན་ལའང་གུས་པར་ཕྱག་འཚལ་ཏེ། །\n");
        assert_eq!(s.len(), 5);
        assert_eq!(s.concat(), BODHICARYAVATARA);
    }

    #[test]
    fn large_chunk_holds_everything() {
        let c = segment(BODHICARYAVATARA, 2000);
        assert_eq!(c, vec![BODHICARYAVATARA]);
    }

    #[test]
    fn sentences_are_packed_greedily() {
        let s = sentences(BODHICARYAVATARA);
        let l1 = s[1].chars().count();
        let l2 = s[2].chars().count();
        let c = segment(BODHICARYAVATARA, l1 + l2);
        assert!(c.contains(&(s[1].to_owned() + s[2]).as_str()), "{c:?}");
        let c = segment(BODHICARYAVATARA, l1 + l2 - 1);
        assert!(c.contains(&s[1]), "{c:?}");
        assert!(c.iter().all(|x| x.chars().count() < l1 + l2), "{c:?}");
        assert_eq!(joined(&c), BODHICARYAVATARA);
    }

    #[test]
    fn other_shads_end_sentences() {
        let t = "ཨོཾ་ཨཱཿ་ཧཱུྃ༔ པདྨ་སིདྡྷི་ཧཱུྃ༔ དེ་ནས་༎ ཀ་ཁ༑";
        let s = sentences(t);
        assert_eq!(s, vec!["ཨོཾ་ཨཱཿ་ཧཱུྃ༔ ", "པདྨ་སིདྡྷི་ཧཱུྃ༔ ", "དེ་ནས་༎ ", "ཀ་ཁ༑"]);
    }

    #[test]
    fn text_without_shad_splits_at_tshegs() {
        let t = "བྱང་ཆུབ་སེམས་དཔའི་སྤྱོད་པ་ལ་འཇུག་པ";
        let c = segment(t, 10);
        assert_eq!(joined(&c), t);
        for ch in &c {
            assert!(ch.chars().count() <= 10, "{ch}");
        }
        // Every chunk but the last ends with a tsheg: no syllable was cut.
        for ch in &c[..c.len() - 1] {
            assert!(ch.ends_with('་'), "{ch}");
        }
    }

    #[test]
    fn stacks_are_never_cut() {
        // "bsgrubs" is one syllable of 7 characters with a subjoined ra.
        let t = "བསྒྲུབས་བསྒྲུབས་";
        let c = segment(t, 3);
        assert_eq!(c, vec!["བསྒྲུབས་", "བསྒྲུབས་"]);
    }

    #[test]
    fn mixed_latin_and_blank_lines() {
        let t = "Title: Bodhicaryavatara\n\nབྱང་ཆུབ་སེམས། ཀ་ཁ།\nThe end, with some words.";
        let c = segment(t, 30);
        assert_eq!(joined(&c), t);
        assert_eq!(c[0], "Title: Bodhicaryavatara\n\n");
        assert!(c.iter().all(|x| !x.is_empty()));
    }

    #[test]
    fn runs_of_punctuation_and_tshegs() {
        for t in ["་་་་་་", "།།།།། ། །", "༄༅༄༅", "ཀ་་་་ཁ།།།།ག", "\n\n\n", " "]
        {
            for size in [1, 2, 5, 100] {
                assert_eq!(joined(&segment(t, size)), t, "{t:?} at {size}");
            }
        }
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(segment("", 10).is_empty());
    }

    fn has_inner_break(chunk: &str) -> bool {
        let syl = syllables(chunk);
        syl.len() > 1
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn chunks_concatenate_to_input(
            parts in proptest::collection::vec(prop_oneof![
                Just("ཀ"), Just("བསྒྲུབས"), Just("ྲ"), Just("ི"), Just("ཱ"), Just("་"), Just("།"),
                Just("༎"), Just("༔"), Just("༄༅"), Just(" "), Just("\n"), Just("\r\n"), Just("abc"),
                Just("é"), Just("\u{0301}"), Just("༠༡"), Just("༌"),
            ], 0..60),
            size in 1usize..30,
        ) {
            let text: String = parts.concat();
            let chunks = segment(&text, size);
            prop_assert_eq!(chunks.concat(), text.clone());
            for c in &chunks {
                prop_assert!(!c.is_empty());
                let first = c.chars().next().unwrap_or(' ');
                // A chunk may start with a combining mark only if the text does.
                if is_combining(first) {
                    prop_assert!(text.starts_with(c));
                }
                if c.chars().count() > size {
                    // Oversized only when it is one sentence no break can split.
                    prop_assert!(!has_inner_break(c), "{:?}", c);
                }
            }
        }
    }
}
