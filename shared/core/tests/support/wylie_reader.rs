//! A small EWTS → Unicode reader, written for the tests only, so the
//! transliteration can be checked by round trip.

const STANDARD_STACKS: &[&str] = &[
    "rk", "rg", "rng", "rj", "rny", "rt", "rd", "rn", "rb", "rm", "rts", "rdz", "rky", "rgy",
    "rmy", "rgw", "rtsw", "lk", "lg", "lng", "lc", "lj", "lt", "ld", "lp", "lb", "lh", "sk", "sg",
    "sng", "sny", "st", "sd", "sn", "sp", "sb", "sm", "sts", "sky", "sgy", "spy", "sby", "smy",
    "skr", "sgr", "snr", "spr", "sbr", "smr", "ky", "khy", "gy", "py", "phy", "by", "my", "kr",
    "khr", "gr", "tr", "thr", "dr", "pr", "phr", "br", "mr", "shr", "sr", "hr", "kl", "gl", "bl",
    "zl", "rl", "sl", "kw", "khw", "gw", "cw", "nyw", "tw", "dw", "tsw", "tshw", "zhw", "zw", "rw",
    "lw", "shw", "sw", "hw", "grw", "drw", "phyw", "dzr", "nr",
];

/// The standard stacks this reader knows.
pub fn standard_stacks() -> &'static [&'static str] {
    STANDARD_STACKS
}

const LETTERS: &[(&str, u32)] = &[
    ("tsh", 0x0F5A),
    ("kh", 0x0F41),
    ("ng", 0x0F44),
    ("ch", 0x0F46),
    ("ny", 0x0F49),
    ("Th", 0x0F4B),
    ("th", 0x0F50),
    ("ph", 0x0F55),
    ("ts", 0x0F59),
    ("dz", 0x0F5B),
    ("zh", 0x0F5E),
    ("sh", 0x0F64),
    ("Sh", 0x0F65),
    ("k", 0x0F40),
    ("g", 0x0F42),
    ("c", 0x0F45),
    ("j", 0x0F47),
    ("T", 0x0F4A),
    ("D", 0x0F4C),
    ("N", 0x0F4E),
    ("t", 0x0F4F),
    ("d", 0x0F51),
    ("n", 0x0F53),
    ("p", 0x0F54),
    ("b", 0x0F56),
    ("m", 0x0F58),
    ("w", 0x0F5D),
    ("z", 0x0F5F),
    ("'", 0x0F60),
    ("y", 0x0F61),
    ("r", 0x0F62),
    ("l", 0x0F63),
    ("s", 0x0F66),
    ("h", 0x0F67),
    ("R", 0x0F6A),
    ("W", 0x0F5D),
    ("Y", 0x0F61),
];

const VOWELS: &[(&str, &str)] = &[
    ("-I", "\u{0F71}\u{0F80}"),
    ("-i", "\u{0F80}"),
    ("ai", "\u{0F7B}"),
    ("au", "\u{0F7D}"),
    ("A", "\u{0F71}"),
    ("I", "\u{0F71}\u{0F72}"),
    ("U", "\u{0F71}\u{0F74}"),
    ("a", ""),
    ("i", "\u{0F72}"),
    ("u", "\u{0F74}"),
    ("e", "\u{0F7A}"),
    ("o", "\u{0F7C}"),
];

const MARKS: &[(&str, &str)] = &[
    ("~M`", "\u{0F82}"),
    ("~M", "\u{0F83}"),
    ("M", "\u{0F7E}"),
    ("H", "\u{0F7F}"),
    ("?", "\u{0F84}"),
    ("^", "\u{0F39}"),
];

const PUNCT: &[(&str, char)] = &[
    ("//", '\u{0F0E}'),
    ("/", '\u{0F0D}'),
    ("@", '\u{0F04}'),
    ("#", '\u{0F05}'),
    ("$", '\u{0F06}'),
    ("%", '\u{0F07}'),
    ("!", '\u{0F08}'),
    ("*", '\u{0F0C}'),
    (";", '\u{0F0F}'),
    ("|", '\u{0F11}'),
    (":", '\u{0F14}'),
    ("=", '\u{0F34}'),
    ("<", '\u{0F3A}'),
    (">", '\u{0F3B}'),
    ("(", '\u{0F3C}'),
    (")", '\u{0F3D}'),
    ("&", '\u{0F85}'),
];

fn letter_at(s: &str) -> Option<(&'static str, u32)> {
    LETTERS
        .iter()
        .find(|(w, _)| s.starts_with(w))
        .map(|(w, c)| (*w, *c))
}

fn base(code: u32) -> char {
    char::from_u32(code).unwrap_or('?')
}

fn sub(w: &str, code: u32) -> char {
    match w {
        "W" => '\u{0FBA}',
        "Y" => '\u{0FBB}',
        "R" => '\u{0FBC}',
        _ => char::from_u32(code + 0x50).unwrap_or('?'),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Join {
    Plain,
    Plus,
    Dot,
}

/// Emit cluster letters: the last `stack_len` form one stack.
fn emit(out: &mut String, letters: &[(&'static str, u32)], stack_len: usize) {
    let split = letters.len() - stack_len;
    for (_, c) in &letters[..split] {
        out.push(base(*c));
    }
    if stack_len > 0 {
        let (_, first) = letters[split];
        out.push(base(first));
        for (w, c) in &letters[split + 1..] {
            out.push(sub(w, *c));
        }
    }
}

fn stack_len(letters: &[(&'static str, u32)], joins: &[Join]) -> usize {
    let n = letters.len();
    if n == 0 {
        return 0;
    }
    // An explicit + run at the end.
    let mut k = 1;
    while k < n && joins[n - k] == Join::Plus {
        k += 1;
    }
    if k > 1 {
        return k;
    }
    // Otherwise the longest standard stack at the end, not crossing a dot.
    let mut best = 1;
    for len in 2..=n.min(4) {
        if joins[n - len + 1..n].iter().any(|j| *j != Join::Plain) {
            break;
        }
        let s: String = letters[n - len..].iter().map(|(w, _)| *w).collect();
        if STANDARD_STACKS.contains(&s.as_str()) {
            best = len;
        }
    }
    best
}

/// Flush trailing letters that carry no vowel (suffixes), honouring `+`.
fn flush_tail(out: &mut String, letters: &mut Vec<(&'static str, u32)>, joins: &mut Vec<Join>) {
    let mut i = 0;
    while i < letters.len() {
        let mut j = i + 1;
        while j < letters.len() && joins[j] == Join::Plus {
            j += 1;
        }
        emit(out, &letters[i..j], j - i);
        i = j;
    }
    letters.clear();
    joins.clear();
}

fn is_shad(c: char) -> bool {
    matches!(
        c,
        '\u{0F0D}' | '\u{0F0E}' | '\u{0F0F}' | '\u{0F11}' | '\u{0F14}'
    )
}

/// Convert EWTS to Tibetan Unicode.
pub fn to_unicode(ewts: &str) -> String {
    let mut out = String::new();
    let mut letters: Vec<(&'static str, u32)> = Vec::new();
    let mut joins: Vec<Join> = Vec::new();
    let mut pending = Join::Plain;
    let mut rest = ewts;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('+') {
            pending = Join::Plus;
            rest = r;
            continue;
        }
        if let Some(r) = rest.strip_prefix('.') {
            pending = Join::Dot;
            rest = r;
            continue;
        }
        // A vowel closes the cluster before it.
        if let Some((w, v)) = VOWELS.iter().find(|(w, _)| rest.starts_with(w)) {
            let k = stack_len(&letters, &joins);
            if letters.is_empty() {
                out.push('\u{0F68}');
            } else {
                emit(&mut out, &letters, k);
            }
            letters.clear();
            joins.clear();
            out.push_str(v);
            rest = &rest[w.len()..];
            while let Some((m, u)) = MARKS.iter().find(|(m, _)| rest.starts_with(m)) {
                out.push_str(u);
                rest = &rest[m.len()..];
            }
            pending = Join::Plain;
            continue;
        }
        if let Some((w, c)) = letter_at(rest) {
            joins.push(pending);
            letters.push((w, c));
            pending = Join::Plain;
            rest = &rest[w.len()..];
            continue;
        }
        flush_tail(&mut out, &mut letters, &mut joins);
        pending = Join::Plain;
        let c = rest.chars().next().unwrap_or(' ');
        if c == ' ' {
            out.push(if out.chars().last().is_some_and(is_shad) {
                ' '
            } else {
                '\u{0F0B}'
            });
            rest = &rest[1..];
        } else if c == '_' {
            out.push(' ');
            rest = &rest[1..];
        } else if c.is_ascii_digit() {
            out.push(char::from_u32(0x0F20 + c as u32 - '0' as u32).unwrap_or('?'));
            rest = &rest[1..];
        } else if let Some((p, u)) = PUNCT.iter().find(|(p, _)| rest.starts_with(p)) {
            out.push(*u);
            rest = &rest[p.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    flush_tail(&mut out, &mut letters, &mut joins);
    out
}

/// Canonical form for comparison: precomposed vowels and stacks decomposed.
pub fn canonical(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\u{0F73}' => out.push_str("\u{0F71}\u{0F72}"),
            '\u{0F75}' => out.push_str("\u{0F71}\u{0F74}"),
            '\u{0F81}' => out.push_str("\u{0F71}\u{0F80}"),
            '\u{0F43}' => out.push_str("\u{0F42}\u{0FB7}"),
            '\u{0F4D}' => out.push_str("\u{0F4C}\u{0FB7}"),
            '\u{0F52}' => out.push_str("\u{0F51}\u{0FB7}"),
            '\u{0F57}' => out.push_str("\u{0F56}\u{0FB7}"),
            '\u{0F5C}' => out.push_str("\u{0F5B}\u{0FB7}"),
            '\u{0F69}' => out.push_str("\u{0F40}\u{0FB5}"),
            '\u{0F93}' => out.push_str("\u{0F92}\u{0FB7}"),
            '\u{0F9D}' => out.push_str("\u{0F9C}\u{0FB7}"),
            '\u{0FA2}' => out.push_str("\u{0FA1}\u{0FB7}"),
            '\u{0FA7}' => out.push_str("\u{0FA6}\u{0FB7}"),
            '\u{0FAC}' => out.push_str("\u{0FAB}\u{0FB7}"),
            '\u{0FB9}' => out.push_str("\u{0F90}\u{0FB5}"),
            other => out.push(other),
        }
    }
    out
}

pub const ROOTS: &[&str] = &[
    "k", "kh", "g", "ng", "c", "ch", "j", "ny", "t", "th", "d", "n", "p", "ph", "b", "m", "ts",
    "tsh", "dz", "w", "zh", "z", "'", "y", "r", "l", "sh", "s", "h",
];
pub const PREFIXES: &[&str] = &["", "g", "d", "b", "m", "'"];
pub const TEMPLATE_VOWELS: &[&str] = &["a", "i", "u", "e", "o"];
pub const SUFFIXES: &[&str] = &["", "g", "ng", "d", "n", "b", "m", "'", "r", "l", "s"];

/// Every syllable of the Tibetan template (any prefix, root or standard
/// stack, vowel, suffix and post-suffix), as (its Wylie, its Unicode).
pub fn template_syllables() -> Vec<(String, String)> {
    let mut roots: Vec<String> = ROOTS.iter().map(|s| s.to_string()).collect();
    roots.extend(standard_stacks().iter().map(|s| s.to_string()));
    let mut out = Vec::new();
    for prefix in PREFIXES {
        for root in &roots {
            for vowel in TEMPLATE_VOWELS {
                for suffix in SUFFIXES {
                    for post in ["", "s", "d"] {
                        if !post.is_empty() && suffix.is_empty() {
                            continue;
                        }
                        let joined = format!("{prefix}{root}");
                        let dot =
                            !prefix.is_empty() && standard_stacks().contains(&joined.as_str());
                        let wylie = format!(
                            "{prefix}{}{root}{vowel}{suffix}{post}",
                            if dot { "." } else { "" }
                        );
                        let unicode = to_unicode(&wylie);
                        out.push((wylie, unicode));
                    }
                }
            }
        }
    }
    out
}
