//! Tibetan Unicode to Extended Wylie (EWTS, the THL/BDRC convention).
//!
//! Each syllable is parsed into stacks (a base consonant, its subjoined
//! consonants, vowel signs and marks). A syllable that fits the Tibetan
//! template (prefix, root, suffix, post-suffix, with the genitive/particle
//! a-chung) is written the Tibetan way: the inherent `a` only after the root,
//! a `.` where a prefix and root would otherwise read as one stack
//! (`g.yag`). Anything else (Sanskrit) is written stack by stack with `+`
//! inside stacks that are not standard Tibetan stacks (`pad+me`).
//!
//! Punctuation: tsheg is a space, a real space is `_` (also after a shad:
//! `/_/`), shad `/`, Tibetan digits are digits; line breaks pass through;
//! a run of non-Tibetan text is bracketed (`[Mixed text, ]`), with `[` and
//! `]` escaped inside. Characters without an EWTS spelling are written as
//! `\uXXXX` escapes, as EWTS prescribes. The reference for all of it is
//! BDRC's pyewts (tests/ewts_oracle.rs).

/// The Wylie spelling of a base consonant (U+0F40..U+0F6C).
fn base_letter(c: char) -> Option<&'static [&'static str]> {
    Some(match c {
        '\u{0F40}' => &["k"],
        '\u{0F41}' => &["kh"],
        '\u{0F42}' => &["g"],
        '\u{0F43}' => &["g", "h"],
        '\u{0F44}' => &["ng"],
        '\u{0F45}' => &["c"],
        '\u{0F46}' => &["ch"],
        '\u{0F47}' => &["j"],
        '\u{0F49}' => &["ny"],
        '\u{0F4A}' => &["T"],
        '\u{0F4B}' => &["Th"],
        '\u{0F4C}' => &["D"],
        '\u{0F4D}' => &["D", "h"],
        '\u{0F4E}' => &["N"],
        '\u{0F4F}' => &["t"],
        '\u{0F50}' => &["th"],
        '\u{0F51}' => &["d"],
        '\u{0F52}' => &["d", "h"],
        '\u{0F53}' => &["n"],
        '\u{0F54}' => &["p"],
        '\u{0F55}' => &["ph"],
        '\u{0F56}' => &["b"],
        '\u{0F57}' => &["b", "h"],
        '\u{0F58}' => &["m"],
        '\u{0F59}' => &["ts"],
        '\u{0F5A}' => &["tsh"],
        '\u{0F5B}' => &["dz"],
        '\u{0F5C}' => &["dz", "h"],
        '\u{0F5D}' => &["w"],
        '\u{0F5E}' => &["zh"],
        '\u{0F5F}' => &["z"],
        '\u{0F60}' => &["'"],
        '\u{0F61}' => &["y"],
        '\u{0F62}' => &["r"],
        '\u{0F63}' => &["l"],
        '\u{0F64}' => &["sh"],
        '\u{0F65}' => &["Sh"],
        '\u{0F66}' => &["s"],
        '\u{0F67}' => &["h"],
        '\u{0F68}' => &["a"],
        '\u{0F69}' => &["k", "Sh"],
        '\u{0F6A}' => &["R"],
        _ => return None,
    })
}

/// The Wylie spelling of a subjoined consonant (U+0F90..U+0FBC).
fn sub_letter(c: char) -> Option<&'static [&'static str]> {
    Some(match c {
        '\u{0FAD}' => &["w"],
        '\u{0FB1}' => &["y"],
        '\u{0FB2}' => &["r"],
        '\u{0FB3}' => &["l"],
        '\u{0FBA}' => &["W"],
        '\u{0FBB}' => &["Y"],
        '\u{0FBC}' => &["R"],
        '\u{0F90}'..='\u{0FAC}' | '\u{0FAE}'..='\u{0FB0}' | '\u{0FB4}'..='\u{0FB9}' => {
            let base = char::from_u32(c as u32 - 0x50)?;
            return base_letter(base);
        }
        _ => return None,
    })
}

/// Standard Tibetan stacks, written without `+`.
const STANDARD_STACKS: &[&str] = &[
    // ra-mgo
    "rk", "rg", "rng", "rj", "rny", "rt", "rd", "rn", "rb", "rm", "rts", "rdz", "rky", "rgy", "rmy",
    "rgw", "rtsw", // la-mgo
    "lk", "lg", "lng", "lc", "lj", "lt", "ld", "lp", "lb", "lh", // sa-mgo
    "sk", "sg", "sng", "sny", "st", "sd", "sn", "sp", "sb", "sm", "sts", "sky", "sgy", "spy",
    "sby", "smy", "skr", "sgr", "snr", "spr", "sbr", "smr", // ya-btags
    "ky", "khy", "gy", "py", "phy", "by", "my", // ra-btags
    "kr", "khr", "gr", "tr", "thr", "dr", "pr", "phr", "br", "mr", "shr", "sr", "hr",
    // la-btags
    "kl", "gl", "bl", "zl", "rl", "sl", // wa-zur
    "kw", "khw", "gw", "cw", "nyw", "tw", "dw", "tsw", "tshw", "zhw", "zw", "rw", "lw", "shw",
    "sw", "hw", "grw", "drw", "phyw",
    // Read as stacks without `+` by the reference (`badzra`).
    "dzr", "nr",
];

/// The letters written together, in `buf` (no allocation); `None` when
/// longer than any stack spelling.
fn joined<'b>(letters: &[&str], buf: &'b mut [u8; 32]) -> Option<&'b str> {
    let mut n = 0;
    for l in letters {
        let b = l.as_bytes();
        buf.get_mut(n..n + b.len())?.copy_from_slice(b);
        n += b.len();
    }
    std::str::from_utf8(&buf[..n]).ok()
}

fn is_standard_stack(letters: &[&str]) -> bool {
    static SORTED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    if letters.len() == 1 {
        return true;
    }
    let sorted = SORTED.get_or_init(|| {
        let mut v = STANDARD_STACKS.to_vec();
        v.sort_unstable();
        v
    });
    let mut buf = [0u8; 32];
    joined(letters, &mut buf).is_some_and(|s| sorted.binary_search(&s).is_ok())
}

const PREFIXES: &[(&str, &[&str])] = &[
    (
        "g",
        &["c", "ny", "t", "d", "n", "ts", "zh", "z", "y", "sh", "s"],
    ),
    (
        "d",
        &[
            "k", "g", "ng", "p", "b", "m", "ky", "gy", "py", "by", "my", "kr", "gr", "pr", "br",
        ],
    ),
    (
        "b",
        &[
            "k", "g", "c", "t", "d", "ts", "zh", "z", "sh", "s", "ky", "gy", "kr", "gr", "kl",
            "zl", "rl", "sl", "rk", "rg", "rng", "rj", "rny", "rt", "rd", "rn", "rts", "rdz", "lt",
            "sk", "sg", "sng", "sny", "st", "sd", "sn", "sts", "rky", "rgy", "sky", "sgy", "skr",
            "sgr", "ld", "lc", "lj", "lng", "lk", "lg", "sr", "l", "r",
        ],
    ),
    (
        "m",
        &[
            "kh", "g", "ng", "ch", "j", "ny", "th", "d", "n", "tsh", "dz", "khy", "gy", "khr", "gr",
        ],
    ),
    (
        "'",
        &[
            "kh", "g", "ch", "j", "th", "d", "ph", "b", "tsh", "dz", "khy", "gy", "phy", "by",
            "khr", "gr", "thr", "dr", "phr", "br",
        ],
    ),
];

const SUFFIXES: &[&str] = &["g", "ng", "d", "n", "b", "m", "'", "r", "l", "s"];

fn is_prefix_of(prefix: &str, root: &str) -> bool {
    // A wa-zur under the root does not change which prefixes it takes
    // (`btw`, `'drw`), as the reference reads it.
    let bare = root.strip_suffix('w').filter(|r| !r.is_empty());
    PREFIXES.iter().any(|(p, roots)| {
        *p == prefix && (roots.contains(&root) || bare.is_some_and(|b| roots.contains(&b)))
    })
}

fn takes_post_suffix(suffix: &str, post: &str) -> bool {
    match post {
        "s" => matches!(suffix, "g" | "ng" | "b" | "m"),
        "d" => matches!(suffix, "n" | "r" | "l"),
        _ => false,
    }
}

/// One stack of a syllable.
#[derive(Debug, Clone, Default)]
struct Stack {
    letters: smallvec::SmallVec<[&'static str; 4]>,
    /// Base consonant was the explicit a (U+0F68).
    a_base: bool,
    long: bool,
    vowel: Option<&'static str>,
    marks: String,
}

impl Stack {
    fn has_vowel(&self) -> bool {
        self.vowel.is_some() || self.long
    }
    fn single(&self) -> Option<&'static str> {
        (self.letters.len() == 1 && !self.has_vowel() && self.marks.is_empty())
            .then(|| self.letters[0])
    }
    fn consonants_into(&self, out: &mut String) {
        if self.a_base && self.letters.len() == 1 {
            return;
        }
        let plus = !is_standard_stack(&self.letters);
        for (i, l) in self.letters.iter().enumerate() {
            if plus && i > 0 {
                out.push('+');
            }
            out.push_str(l);
        }
    }
    /// The vowel part; `inherent` asks for `a` when no vowel sign is present.
    fn vowel_into(&self, inherent: bool, out: &mut String) {
        match (self.long, self.vowel) {
            (false, None) => {
                if inherent || (self.a_base && self.letters.len() == 1) {
                    out.push('a');
                }
            }
            (true, None) => out.push('A'),
            (false, Some(v)) => out.push_str(v),
            (true, Some("i")) => out.push('I'),
            (true, Some("u")) => out.push('U'),
            (true, Some("-i")) => out.push_str("-I"),
            (true, Some(v)) => {
                out.push('A');
                out.push_str(v);
            }
        }
        out.push_str(&self.marks);
    }
    /// True when the vowel part would be empty.
    fn bare(&self) -> bool {
        !self.long
            && self.vowel.is_none()
            && self.marks.is_empty()
            && !(self.a_base && self.letters.len() == 1)
    }
    fn render_into(&self, inherent: bool, out: &mut String) {
        self.consonants_into(out);
        self.vowel_into(inherent, out);
    }
}

fn vowel_sign(c: char) -> Option<(bool, Option<&'static str>)> {
    Some(match c {
        '\u{0F71}' => (true, None),
        '\u{0F72}' => (false, Some("i")),
        '\u{0F73}' => (true, Some("i")),
        '\u{0F74}' => (false, Some("u")),
        '\u{0F75}' => (true, Some("u")),
        '\u{0F76}' => (false, Some("r-i")),
        '\u{0F77}' => (false, Some("r-I")),
        '\u{0F78}' => (false, Some("l-i")),
        '\u{0F79}' => (false, Some("l-I")),
        '\u{0F7A}' => (false, Some("e")),
        '\u{0F7B}' => (false, Some("ai")),
        '\u{0F7C}' => (false, Some("o")),
        '\u{0F7D}' => (false, Some("au")),
        '\u{0F80}' => (false, Some("-i")),
        '\u{0F81}' => (true, Some("-i")),
        _ => return None,
    })
}

fn mark(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{0F7E}' => "M",
        '\u{0F82}' => "~M`",
        '\u{0F83}' => "~M",
        '\u{0F7F}' => "H",
        '\u{0F84}' => "?",
        '\u{0F39}' => "^",
        _ => return None,
    })
}

fn punctuation(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{0F00}' => "oM",
        '\u{0F04}' => "@",
        '\u{0F05}' => "#",
        '\u{0F06}' => "$",
        '\u{0F07}' => "%",
        '\u{0F08}' => "!",
        '\u{0F0B}' => " ",
        '\u{0F0C}' => "*",
        '\u{0F0D}' => "/",
        '\u{0F0E}' => "//",
        '\u{0F0F}' => ";",
        '\u{0F11}' => "|",
        '\u{0F14}' => ":",
        '\u{0F34}' => "=",
        '\u{0F3A}' => "<",
        '\u{0F3B}' => ">",
        '\u{0F3C}' => "(",
        '\u{0F3D}' => ")",
        '\u{0F85}' => "&",
        '\u{0F20}' => "0",
        '\u{0F21}' => "1",
        '\u{0F22}' => "2",
        '\u{0F23}' => "3",
        '\u{0F24}' => "4",
        '\u{0F25}' => "5",
        '\u{0F26}' => "6",
        '\u{0F27}' => "7",
        '\u{0F28}' => "8",
        '\u{0F29}' => "9",
        _ => return None,
    })
}

/// Render the stacks of one syllable.
fn render_syllable(stacks: &[Stack], out: &mut String) {
    let mark = out.len();
    if render_tibetan(stacks, out).is_some() {
        return;
    }
    out.truncate(mark);
    // Sanskrit: stack by stack, each with its vowel or the inherent a.
    for s in stacks {
        s.render_into(true, out);
    }
}

/// The Tibetan reading of a syllable, when it fits the template, written to
/// `out` (which holds a partial write when it does not).
fn render_tibetan(stacks: &[Stack], out: &mut String) -> Option<()> {
    let n = stacks.len();
    if n == 0 {
        return Some(());
    }
    // A final a-chung with a vowel (`'i`, `'o`, `'u`) is a particle, and so
    // is one followed by the case ending `s` or `r` (`khye'us`, `bu'ur`).
    let achung = |s: &Stack| s.letters.as_slice() == ["'"] && s.has_vowel() && !s.long;
    let ending =
        n >= 3 && achung(&stacks[n - 2]) && matches!(stacks[n - 1].single(), Some("s" | "r"));
    let particle = ending || (n >= 2 && achung(&stacks[n - 1]));
    let at = if ending { n - 2 } else { n - 1 };
    let body_len = if particle { at } else { n };
    let body = &stacks[..body_len];
    let root = if let Some(i) = body.iter().position(Stack::has_vowel) {
        i
    } else if let Some(i) = body.iter().position(|s| s.letters.len() > 1) {
        i
    } else {
        let singles: smallvec::SmallVec<[&str; 6]> =
            body.iter().filter_map(Stack::single).collect();
        if singles.len() != body.len() {
            return None;
        }
        // With a particle, its a-chung counts as the suffix.
        let mut letters = singles;
        if particle {
            letters.push("'");
        }
        match letters.len() {
            1 => 0,
            // Two letters: root and suffix (`dag`), unless the second cannot
            // be a suffix and the first prefixes it (`mtha`, `'cha`).
            2 => {
                usize::from(!SUFFIXES.contains(&letters[1]) && is_prefix_of(letters[0], letters[1]))
            }
            3 => {
                let (a, b, c) = (letters[0], letters[1], letters[2]);
                // With a final `s` that could be a post-suffix, a-chung and
                // da (but not before nga) prefix (`'bas`, `dgas`, `dangs`),
                // as the reference reads them; the others root (`bags`).
                if is_prefix_of(a, b)
                    && SUFFIXES.contains(&c)
                    && (a == "'"
                        || (a == "d" && b != "ng")
                        || !(c == "s" && takes_post_suffix(b, c)))
                {
                    1
                } else {
                    0
                }
            }
            4 => 1,
            _ => return None,
        }
    };
    if root > 1
        || body
            .iter()
            .enumerate()
            .any(|(i, s)| i != root && s.single().is_none())
    {
        return None;
    }
    let root_stack = &body[root];
    if root_stack.a_base && root > 0 {
        return None;
    }
    if root == 1 {
        let prefix = body[0].single()?;
        let mut buf = [0u8; 32];
        if !is_prefix_of(prefix, joined(&root_stack.letters, &mut buf)?) {
            return None;
        }
        out.push_str(prefix);
        let mut with_prefix: smallvec::SmallVec<[&str; 6]> = smallvec::smallvec![prefix];
        with_prefix.extend(root_stack.letters.iter().copied());
        if is_standard_stack(&with_prefix) {
            out.push('.');
        }
    }
    root_stack.render_into(true, out);
    let tail = &body[root + 1..];
    match tail.len() {
        0 => {}
        1 => {
            let s = tail[0].single()?;
            if !SUFFIXES.contains(&s) {
                return None;
            }
            out.push_str(s);
        }
        2 => {
            let (s, p) = (tail[0].single()?, tail[1].single()?);
            if s == "'" && matches!(p, "ng" | "m" | "s") {
                // The particles 'ang, 'am and 'as: la'ang, la'am.
                out.push_str("'a");
                out.push_str(p);
            } else if SUFFIXES.contains(&s) && takes_post_suffix(s, p) {
                out.push_str(s);
                out.push_str(p);
            } else {
                return None;
            }
        }
        _ => return None,
    }
    if particle {
        if stacks[at].bare() {
            return None;
        }
        stacks[at].render_into(false, out);
        if ending {
            out.push_str(stacks[n - 1].single()?);
        }
    }
    Some(())
}

fn is_tibetan(c: char) -> bool {
    ('\u{0F00}'..='\u{0FFF}').contains(&c)
}

fn escape(c: char) -> String {
    format!("\\u{:04X}", c as u32)
}

/// Convert Tibetan Unicode to EWTS, as the reference converter (BDRC's
/// pyewts) writes it: text that is not Tibetan is bracketed (`[...]`), a
/// space is `_`, line breaks pass through.
pub fn to_ewts(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut syllable: Vec<Stack> = Vec::new();
    let flush = |syl: &mut Vec<Stack>, out: &mut String| {
        if !syl.is_empty() {
            render_syllable(syl, out);
            syl.clear();
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if let Some(letters) = base_letter(c) {
            let mut stack = Stack {
                letters: letters.iter().copied().collect(),
                a_base: c == '\u{0F68}',
                ..Stack::default()
            };
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                if let Some(sub) = sub_letter(d) {
                    if stack.a_base && stack.letters.as_slice() == ["a"] {
                        stack.letters.clear();
                        stack.a_base = false;
                        stack.letters.push("a");
                        // ཨ with a subjoined letter is a real stack.
                    }
                    stack.letters.extend(sub.iter().copied());
                } else if let Some((long, v)) = vowel_sign(d) {
                    stack.long |= long;
                    if v.is_some() {
                        stack.vowel = v;
                    }
                } else if let Some(m) = mark(d) {
                    stack.marks.push_str(m);
                } else {
                    break;
                }
                i += 1;
            }
            syllable.push(stack);
            continue;
        }
        flush(&mut syllable, &mut out);
        if let Some(p) = punctuation(c) {
            out.push_str(p);
        } else if is_tibetan(c) || c == '\n' || c == '\r' {
            if is_tibetan(c) {
                out.push_str(&escape(c));
            } else {
                out.push(c);
            }
        } else {
            // A run of text that is not Tibetan (up to the next Tibetan
            // character or line break): spaces alone are `_`; anything else
            // is bracketed whole, spaces included, `[` and `]` escaped.
            let end = chars[i..]
                .iter()
                .position(|&d| is_tibetan(d) || d == '\n' || d == '\r')
                .map_or(chars.len(), |k| i + k);
            let run = &chars[i..end];
            if run.iter().all(|&d| d == ' ') {
                out.extend(std::iter::repeat_n('_', run.len()));
            } else {
                out.push('[');
                for &d in run {
                    if d == '[' || d == ']' {
                        out.push('\\');
                    }
                    out.push(d);
                }
                out.push(']');
            }
            i = end;
            continue;
        }
        i += 1;
    }
    flush(&mut syllable, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("བསྒྲུབས", "bsgrubs")]
    #[case("གཡག", "g.yag")]
    #[case("གྱག", "gyag")]
    #[case("དགའ", "dga'")]
    #[case("དགའི", "dga'i")]
    #[case("པདྨེ", "pad+me")]
    #[case("ཨོཾ", "oM")]
    #[case("ཧཱུྃ", "hU~M")]
    #[case("ཎི", "Ni")]
    #[case("མདའ", "mda'")]
    #[case("བདག", "bdag")]
    #[case("གནས", "gnas")]
    #[case("ལགས", "lags")]
    #[case("བཀྲ་ཤིས་བདེ་ལེགས།", "bkra shis bde legs/")]
    #[case("༡༢༣", "123")]
    #[case("ཀ། །ཁ", "ka/_/kha")]
    #[case("བསྲུང", "bsrung")]
    #[case("ཁྱེའུས", "khye'us")]
    #[case("ཁྱེའུར", "khye'ur")]
    #[case("ཀ:ཁ", "ka[:]kha")]
    #[case("‹ཀ›", "[‹]ka[›]")]
    #[case("ཀ abc ཁ", "ka[ abc ]kha")]
    #[case("ཀ[x]", "ka[\\[x\\]]")]
    #[case("ཤོག །", "shog_/")]
    #[case("abc ཀ", "[abc ]ka")]
    #[case("ཀ་ཁ_x y", "ka kha[_x y]")]
    #[case("ཀ\nཁ ", "ka\nkha_")]
    #[case("ལའང", "la'ang")]
    fn hard_cases(#[case] bo: &str, #[case] ewts: &str) {
        assert_eq!(to_ewts(bo), ewts);
    }
}
