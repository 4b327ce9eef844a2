//! Translation quality scores, computed as sacrebleu computes them with its
//! default settings: chrF (character 6-grams, β = 2, whitespace removed),
//! chrF++ (the same plus word 1- and 2-grams) and BLEU (13a tokenization,
//! 4-grams, `exp` smoothing, brevity penalty), at corpus level from summed
//! statistics and at segment level for chrF. One reference per segment.

use std::collections::HashMap;

/// chrF's character n-gram order.
const CHAR_ORDER: usize = 6;
/// chrF++'s word n-gram order.
const WORD_ORDER: usize = 2;
/// chrF's β.
const BETA: f64 = 2.0;
/// BLEU's n-gram order.
const BLEU_ORDER: usize = 4;

/// Summed chrF statistics: `[hyp, ref, match]` per order (character orders
/// first, then word orders for chrF++).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChrfStats(Vec<[u64; 3]>);

/// Summed BLEU statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis tokens.
    pub sys_len: u64,
    /// Reference tokens.
    pub ref_len: u64,
    /// Matched n-grams per order.
    pub correct: [u64; BLEU_ORDER],
    /// Hypothesis n-grams per order.
    pub total: [u64; BLEU_ORDER],
}

fn counts<T: std::hash::Hash + Eq>(items: impl Iterator<Item = T>) -> HashMap<T, u64> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

/// `[hyp, ref, match]` of two n-gram counts; no hypothesis n-gram counts
/// when the reference has none of that order (as sacrebleu).
fn matched<T: std::hash::Hash + Eq>(hyp: &HashMap<T, u64>, refs: &HashMap<T, u64>) -> [u64; 3] {
    let (mut n_hyp, mut n_match) = (0, 0);
    for (g, c) in hyp {
        n_hyp += c;
        if let Some(r) = refs.get(g) {
            n_match += (*c).min(*r);
        }
    }
    let n_ref = refs.values().sum();
    [if refs.is_empty() { 0 } else { n_hyp }, n_ref, n_match]
}

/// Words for chrF++'s word n-grams: split on whitespace, one punctuation
/// mark split off the end (else the start) of each word longer than one
/// character.
fn chrf_words(text: &str) -> Vec<&str> {
    const PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        let mut chars = w.chars();
        let first = chars.next();
        let last = w.chars().next_back();
        if w.chars().count() == 1 {
            out.push(w);
        } else if let Some(l) = last.filter(|c| PUNCT.contains(*c)) {
            let cut = w.len() - l.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else if let Some(f) = first.filter(|c| PUNCT.contains(*c)) {
            let cut = f.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else {
            out.push(w);
        }
    }
    out
}

impl ChrfStats {
    /// The statistics of one segment; `words` adds chrF++'s word orders.
    pub fn segment(hypothesis: &str, reference: &str, words: bool) -> Self {
        let squeeze = |t: &str| -> Vec<char> { t.chars().filter(|c| !c.is_whitespace()).collect() };
        let (h, r) = (squeeze(hypothesis), squeeze(reference));
        let mut orders = Vec::with_capacity(CHAR_ORDER + WORD_ORDER);
        for n in 1..=CHAR_ORDER {
            let hc = counts(h.windows(n));
            let rc = counts(r.windows(n));
            orders.push(matched(&hc, &rc));
        }
        if words {
            let (hw, rw) = (chrf_words(hypothesis), chrf_words(reference));
            for n in 1..=WORD_ORDER {
                let hc = counts(hw.windows(n));
                let rc = counts(rw.windows(n));
                orders.push(matched(&hc, &rc));
            }
        }
        Self(orders)
    }

    /// Empty statistics of the same shape.
    pub fn zero(words: bool) -> Self {
        Self(vec![
            [0; 3];
            CHAR_ORDER + if words { WORD_ORDER } else { 0 }
        ])
    }

    /// Add another segment's statistics.
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            for k in 0..3 {
                a[k] += b[k];
            }
        }
    }

    /// The score, 0..=100: precision and recall averaged over the orders
    /// that have both hypothesis and reference n-grams, then F_β.
    pub fn score(&self) -> f64 {
        let (mut prec, mut rec, mut effective) = (0.0, 0.0, 0u32);
        for [h, r, m] in &self.0 {
            if *h > 0 && *r > 0 {
                prec += *m as f64 / *h as f64;
                rec += *m as f64 / *r as f64;
                effective += 1;
            }
        }
        if effective == 0 {
            return 0.0;
        }
        let (p, r) = (prec / f64::from(effective), rec / f64::from(effective));
        let f = BETA * BETA;
        if p + r == 0.0 {
            return 0.0;
        }
        100.0 * (1.0 + f) * p * r / (f * p + r)
    }
}

/// sacrebleu's `13a` tokenization (mteval-v13a): punctuation and symbols
/// split off, periods and commas unless beside digits, a dash after a digit.
pub fn tokenize_13a(line: &str) -> String {
    let line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    let line = if line.contains('&') {
        line.replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
    } else {
        line
    };
    let chars: Vec<char> = format!(" {line} ").chars().collect();
    // Symbols: { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
    let symbol =
        |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let mut a = Vec::with_capacity(chars.len() * 2);
    for c in chars {
        if symbol(c) {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let stop = |c: char| c == '.' || c == ',';
    // Each pass: leftmost, non-overlapping matches of a two-character pattern.
    let pass = |input: Vec<char>,
                hit: &dyn Fn(char, char) -> bool,
                out: &dyn Fn(char, char, &mut Vec<char>)| {
        let mut o = Vec::with_capacity(input.len() + 8);
        let mut i = 0;
        while i < input.len() {
            if i + 1 < input.len() && hit(input[i], input[i + 1]) {
                out(input[i], input[i + 1], &mut o);
                i += 2;
            } else {
                o.push(input[i]);
                i += 1;
            }
        }
        o
    };
    let b = pass(a, &|x, y| !digit(x) && stop(y), &|x, y, o| {
        o.extend([x, ' ', y, ' '])
    });
    let c = pass(b, &|x, y| stop(x) && !digit(y), &|x, y, o| {
        o.extend([' ', x, ' ', y])
    });
    let d = pass(c, &|x, y| digit(x) && y == '-', &|x, y, o| {
        o.extend([x, ' ', y, ' '])
    });
    let s: String = d.into_iter().collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl BleuStats {
    /// The statistics of one segment (both sides tokenized with 13a).
    pub fn segment(hypothesis: &str, reference: &str) -> Self {
        let (h, r) = (tokenize_13a(hypothesis), tokenize_13a(reference));
        let hw: Vec<&str> = h.split_whitespace().collect();
        let rw: Vec<&str> = r.split_whitespace().collect();
        let mut s = Self {
            sys_len: hw.len() as u64,
            ref_len: rw.len() as u64,
            ..Self::default()
        };
        for n in 1..=BLEU_ORDER {
            let hc = counts(hw.windows(n));
            let rc = counts(rw.windows(n));
            for (g, c) in &hc {
                s.total[n - 1] += c;
                if let Some(rcount) = rc.get(g) {
                    s.correct[n - 1] += (*c).min(*rcount);
                }
            }
        }
        s
    }

    /// Add another segment's statistics.
    pub fn add(&mut self, o: &Self) {
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
        for n in 0..BLEU_ORDER {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
    }

    /// Corpus BLEU, 0..=100, with sacrebleu's `exp` smoothing.
    pub fn score(&self) -> f64 {
        if self.correct.iter().all(|c| *c == 0) {
            return 0.0;
        }
        let bp = if self.sys_len < self.ref_len {
            if self.sys_len > 0 {
                (1.0 - self.ref_len as f64 / self.sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut precisions = [0.0f64; BLEU_ORDER];
        let mut smooth = 1.0;
        for ((p, correct), total) in precisions.iter_mut().zip(self.correct).zip(self.total) {
            if total == 0 {
                break;
            }
            *p = if correct == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total as f64)
            } else {
                100.0 * correct as f64 / total as f64
            };
        }
        let log = |p: f64| if p > 0.0 { p.ln() } else { -9_999_999_999.0 };
        bp * (precisions.iter().map(|p| log(*p)).sum::<f64>() / BLEU_ORDER as f64).exp()
    }
}

/// Corpus scores of `(hypothesis, reference)` pairs, and each segment's
/// chrF.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// chrF per segment.
    pub segment_chrf: Vec<f64>,
    /// Corpus chrF.
    pub chrf: f64,
    /// Corpus chrF++.
    pub chrfpp: f64,
    /// Corpus BLEU.
    pub bleu: f64,
}

/// Score a corpus.
pub fn score(pairs: &[(&str, &str)]) -> Scores {
    let (mut chrf, mut chrfpp, mut bleu) = (
        ChrfStats::zero(false),
        ChrfStats::zero(true),
        BleuStats::default(),
    );
    let mut segment_chrf = Vec::with_capacity(pairs.len());
    for (h, r) in pairs {
        let c = ChrfStats::segment(h, r, false);
        segment_chrf.push(c.score());
        chrf.add(&c);
        chrfpp.add(&ChrfStats::segment(h, r, true));
        bleu.add(&BleuStats::segment(h, r));
    }
    Scores {
        segment_chrf,
        chrf: chrf.score(),
        chrfpp: chrfpp.score(),
        bleu: bleu.score(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases and figures from sacrebleu 2.6.0 with its defaults
    /// (`CHRF()`, `CHRF(word_order=2)`, `BLEU()`; `sentence_score` for
    /// the segments).
    const CASES: &[(&str, &str)] = &[
        ("The cat sat on the mat.", "The cat is sitting on the mat."),
        (
            "Homage to Manjushri, the youthful one!",
            "Homage to the youthful Mañjuśrī!",
        ),
        (
            "All phenomena are empty of inherent existence.",
            "All phenomena lack inherent existence.",
        ),
        (
            "In 1881, Jäschke's dictionary (2nd ed.) was printed: 671 pages.",
            "Jäschke's dictionary was printed in 1881, 671 pages.",
        ),
        ("", "Nothing was said."),
        ("bodhisattva", "bodhisattva"),
        ("[sangs rgyas] [chos]", "The Buddha and the Dharma"),
        (
            "x-ray 3-4, a.b, 1.5 &amp; \"quoted\" <tag>",
            "x-ray 3-4, a.b, 1.5 & \"quoted\"",
        ),
    ];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn scores_match_sacrebleu() {
        let s = score(CASES);
        let want = [
            49.6485170311433,
            56.854443942088494,
            76.58850463258011,
            76.26842594399731,
            0.0,
            100.0,
            4.944081066585422,
            81.72548117833071,
        ];
        for (i, (got, want)) in s.segment_chrf.iter().zip(want).enumerate() {
            assert!(close(*got, want), "segment {i}: {got} vs {want}");
        }
        assert!(close(s.chrf, 61.274809926872784), "chrF {}", s.chrf);
        assert!(close(s.chrfpp, 60.22909967319096), "chrF++ {}", s.chrfpp);
        assert!(close(s.bleu, 39.67088290836578), "BLEU {}", s.bleu);
    }

    #[test]
    fn tokenization_matches_13a() {
        let want = [
            "The cat sat on the mat .",
            "Homage to Manjushri , the youthful one !",
            "All phenomena are empty of inherent existence .",
            "In 1881 , Jäschke's dictionary ( 2nd ed . ) was printed : 671 pages .",
            "",
            "bodhisattva",
            "[ sangs rgyas ] [ chos ]",
            "x-ray 3 - 4 , a . b , 1.5 & \" quoted \" < tag >",
        ];
        for ((h, _), w) in CASES.iter().zip(want) {
            assert_eq!(tokenize_13a(h), w);
        }
    }

    #[test]
    fn identical_text_scores_100_and_nothing_scores_0() {
        let s = score(&[("the same words here", "the same words here")]);
        assert!(close(s.chrf, 100.0) && close(s.chrfpp, 100.0) && close(s.bleu, 100.0));
        let s = score(&[("", "")]);
        assert_eq!((s.chrf, s.chrfpp, s.bleu), (0.0, 0.0, 0.0));
    }
}
