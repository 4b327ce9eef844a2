//! Fuzzy translation memory: for a Tibetan chunk, the earlier segments whose
//! source is most like it, to show the model as examples.
//!
//! Similarity is chrF-like: the character n-grams (n = 1..=[`ORDER`]) two
//! texts share, as an F-score with β = 1 averaged over n. Before counting, a
//! text is normalized: whitespace and control characters are removed, and
//! every run of Tibetan punctuation (tsheg ་, shad །, head marks ༄༅, …) becomes
//! one tsheg, dropped at the ends. Tshegs are kept because they mark syllable
//! ends: on the Heart Sutra and the Derge excerpt, edited lines stand further
//! from unrelated lines with them than without. Shads are folded into tshegs
//! because where a sentence breaks, and whether a verse line has one shad or
//! two, says little about the wording.
//!
//! Candidates are found without scanning the memory through an inverted index
//! over [`index_keys`] (character [`KEY_ORDER`]-grams of the normalized text,
//! hashed): the segments sharing the most keys with the query are ranked with
//! [`similarity`]. [`FuzzyIndex`] keeps that index in memory; a store keeps
//! `(gram, segment)` rows instead and ranks what they return with [`rank`].
//!
//! Stores keep key values: the normalization, [`KEY_ORDER`] and the key hash
//! (splitmix64 steps over code points) must not change, or stored keys stop
//! matching until the stores re-key their segments.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// Longest character n-gram the similarity counts (n = 1..=ORDER). Six, as
/// sacrebleu's chrF: with four, two unrelated 2000-character chunks of the
/// same sutra already share most of their n-grams (0.57 on average, against
/// 0.44 with six), while edited lines separate from unrelated ones as well.
pub const ORDER: usize = 6;

/// Length, in normalized characters, of the n-grams that key the index. Four
/// characters hold about a syllable and its tsheg, so a key is rarely common
/// to most segments the way a lone particle (`་པ་`) is.
pub const KEY_ORDER: usize = 4;

/// Most keys one text gets: a longer text keeps the `MAX_KEYS` smallest key
/// values (a bottom-k MinHash sample), so two similar long texts still share
/// most of their keys while a store writes a bounded number of rows.
pub const MAX_KEYS: usize = 256;

/// The similarity from which a match is shown to the model as an example.
/// Two different lines of the Derge excerpt score 0.15 on average and 0.37
/// at the 99th percentile; two 2000-character chunks of it, which share the
/// sutra's formulas, 0.44 and 0.61; a line with 40% of its syllables edited
/// still scores 0.63–0.66. Below 0.6 a match brings mostly wording the chunk
/// does not have; above it, most of the chunk's phrases.
pub const USEFUL: f64 = 0.6;

/// How much lower a human revision's similarity may be and still rank above
/// a machine translation's: an edit of that size is worth less than a
/// reviewed translation.
pub const HUMAN_MARGIN: f64 = 0.01;

/// Default bound on the candidates [`FuzzyIndex::lookup`] ranks with
/// [`similarity`]. Over 100,000 synthetic segments, 25 to 200 candidates
/// found the same best match as a scan of all of them for every query whose
/// best is at least [`USEFUL`]; 50 leaves room for memories with many near
/// repeats, at about 4 µs a candidate.
pub const DEFAULT_CANDIDATES: usize = 50;

/// Default share of the segments above which a key is a stop key that
/// [`FuzzyIndex::lookup`] does not scan: keys such as `་པར་` or `ཀྱི་` are in
/// a third of the benchmark's segments, and scanning them would cost more
/// than ranking the candidates.
pub const DEFAULT_STOP_SHARE: f64 = 0.01;

/// Postings a key may have whatever the share: scanning that many is cheap,
/// and a small index should not lose its keys to the share rule.
const STOP_FLOOR: usize = 1_000;

/// Keys a lookup scans even when they are stop keys (the rarest of them):
/// a query made only of common phrases still finds its duplicates.
const MIN_SCANNED_KEYS: usize = 8;

/// Share (one in this many) of its keys a lookup scans at least, the rarest
/// first, stop keys or not: a query of common syllables otherwise ranks its
/// candidates on a handful of keys.
const MIN_SCANNED_PART: usize = 3;

/// The tsheg every punctuation run becomes.
const TSHEG: char = '\u{0F0B}';

/// A segment in the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The caller's handle (a row id).
    pub id: u64,
    /// The Tibetan source.
    pub source: String,
    /// Whether a person wrote or revised the translation.
    pub human: bool,
}

/// A match.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// The entry's id.
    pub id: u64,
    /// [`similarity`] of the query and the entry's source.
    pub similarity: f64,
    /// Whether the entry's translation is a human one.
    pub human: bool,
}

/// Tibetan punctuation, tshegs included: each run is one syllable boundary.
fn is_boundary(c: char) -> bool {
    matches!(c, '\u{0F01}'..='\u{0F14}' | '\u{0F3A}'..='\u{0F3D}' | '\u{0FD0}'..='\u{0FD4}')
}

/// The characters the similarity and the keys are computed over.
fn normalize(text: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(text.len() / 3 + 1);
    normalize_into(text, &mut out);
    out
}

/// [`normalize`] into a buffer a loop reuses.
fn normalize_into(text: &str, out: &mut Vec<char>) {
    out.clear();
    let mut boundary = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            continue;
        }
        if is_boundary(c) {
            // A boundary before any content would start the text with a tsheg.
            boundary = !out.is_empty();
            continue;
        }
        if boundary {
            out.push(TSHEG);
            boundary = false;
        }
        out.push(c);
    }
}

/// One step of the key hash (splitmix64's finalizer): a bijection, so keys
/// of different grams collide only by chance.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The hash of an index key: code points folded one by one from a fixed
/// seed through [`mix`], so keys are well spread and stable.
fn gram_hash(gram: &[char]) -> u64 {
    gram.iter().fold(0, |h, &c| mix(h ^ u64::from(c)))
}

/// Multiplier of the similarity's n-gram hash and of the table's
/// Fibonacci hashing (2⁶⁴ / φ, odd).
const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// Every n-gram of every order of a text, as `f(hash, order)` with the order
/// 0-based, order by order. The hash is polynomial (`h·K + c`), so order
/// n + 1 extends order n in one pass over the text that nothing serializes;
/// it only ever compares n-grams of one order, where distinct ones collide
/// by chance only. `hashes` is scratch space.
fn each_gram(chars: &[char], hashes: &mut Vec<u64>, mut f: impl FnMut(u64, usize)) {
    hashes.clear();
    hashes.extend(chars.iter().map(|&c| u64::from(c)));
    for n in 0..ORDER {
        if n > 0 {
            hashes.truncate(chars.len().saturating_sub(n));
            for (h, &c) in hashes.iter_mut().zip(chars.get(n..).unwrap_or_default()) {
                *h = h.wrapping_mul(K).wrapping_add(u64::from(c));
            }
        }
        for &h in hashes.iter() {
            f(h, n);
        }
    }
}

/// n-grams of order `n` (0-based) in a text of `len` characters.
fn grams_of_order(len: usize, n: usize) -> usize {
    len.saturating_sub(n)
}

/// Mean over the orders either text has of `f(order, grams of both)`.
fn mean_over_orders(la: usize, lb: usize, f: impl Fn(usize, usize) -> f64) -> f64 {
    let (mut sum, mut orders) = (0.0, 0u32);
    for n in 0..ORDER {
        let total = grams_of_order(la, n) + grams_of_order(lb, n);
        if total > 0 {
            sum += f(n, total);
            orders += 1;
        }
    }
    if orders == 0 {
        0.0
    } else {
        sum / f64::from(orders)
    }
}

/// The most the similarity can be for texts of these normalized lengths:
/// every n-gram of the shorter one matched.
fn length_bound(la: usize, lb: usize) -> f64 {
    mean_over_orders(la, lb, |n, total| {
        2.0 * grams_of_order(la, n).min(grams_of_order(lb, n)) as f64 / total as f64
    })
}

/// A cell of [`Grams`]: an n-gram's hash, order and occurrences.
#[derive(Clone, Copy, Default)]
struct Cell {
    hash: u64,
    order: u32,
    /// Zero marks an empty cell.
    count: u32,
}

/// One side of the similarity, built once: its n-gram counts in an
/// open-addressing table that the other side's n-grams probe as they are
/// made, so ranking many candidates neither sorts nor allocates per one.
struct Grams {
    /// Normalized length in characters.
    len: usize,
    /// A power of two at least twice the n-grams, so probes end soon.
    table: Vec<Cell>,
    /// `64 - log2(table length)`: the top bits of a product pick a cell.
    shift: u32,
}

impl Grams {
    fn new(chars: &[char], hashes: &mut Vec<u64>) -> Self {
        let cells = chars
            .len()
            .saturating_mul(2 * ORDER)
            .max(16)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        let mut grams = Self {
            len: chars.len(),
            table: vec![Cell::default(); cells],
            shift: 64 - cells.trailing_zeros(),
        };
        let mask = cells - 1;
        let (table, shift) = (&mut grams.table, grams.shift);
        each_gram(chars, hashes, |hash, n| {
            let order = n as u32;
            let mut i = Self::home(hash, order, shift);
            while let Some(cell) = table.get_mut(i) {
                if cell.count == 0 {
                    *cell = Cell {
                        hash,
                        order,
                        count: 1,
                    };
                    break;
                }
                if cell.hash == hash && cell.order == order {
                    cell.count += 1;
                    break;
                }
                i = (i + 1) & mask;
            }
        });
        grams
    }

    /// First cell to probe (Fibonacci hashing of the hash and the order).
    fn home(hash: u64, order: u32, shift: u32) -> usize {
        ((hash ^ u64::from(order)).wrapping_mul(K) >> shift) as usize
    }

    /// chrF with β = 1 against another text: per order, 2·matched / (n-grams
    /// of one + n-grams of the other), so symmetric; an n-gram matches as
    /// many times as it occurs in both. `used` and `hashes` are scratch.
    fn score(&self, other: &[char], used: &mut Vec<u32>, hashes: &mut Vec<u64>) -> f64 {
        let mask = self.table.len() - 1;
        used.clear();
        used.resize(self.table.len(), 0);
        let mut matched = [0usize; ORDER];
        each_gram(other, hashes, |hash, n| {
            let order = n as u32;
            let mut i = Self::home(hash, order, self.shift);
            while let (Some(cell), Some(u)) = (self.table.get(i), used.get_mut(i)) {
                if cell.count == 0 {
                    break;
                }
                if cell.hash == hash && cell.order == order {
                    if *u < cell.count {
                        *u += 1;
                        if let Some(m) = matched.get_mut(n) {
                            *m += 1;
                        }
                    }
                    break;
                }
                i = (i + 1) & mask;
            }
        });
        mean_over_orders(self.len, other.len(), |n, total| {
            2.0 * matched[n] as f64 / total as f64
        })
    }
}

/// chrF-like similarity of two texts in 0..=1: character n-grams, n = 1..=
/// [`ORDER`], of the normalized texts (see the module doc), F-score with
/// β = 1 per order (so `similarity(a, b) == similarity(b, a)`), averaged over
/// the orders either text has. Identical normalized texts score 1.0; texts
/// sharing no character, or a text with no content, score 0.0.
pub fn similarity(a: &str, b: &str) -> f64 {
    let mut hashes = Vec::new();
    Grams::new(&normalize(a), &mut hashes).score(&normalize(b), &mut Vec::new(), &mut hashes)
}

/// The keys of normalized characters: hashes of the distinct [`KEY_ORDER`]-
/// grams, or of the whole text when it is shorter, the [`MAX_KEYS`] smallest.
fn keys_of(chars: &[char]) -> Vec<u64> {
    if chars.is_empty() {
        return Vec::new();
    }
    let mut keys: Vec<u64> = if chars.len() < KEY_ORDER {
        vec![gram_hash(chars)]
    } else {
        chars.windows(KEY_ORDER).map(gram_hash).collect()
    };
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(MAX_KEYS);
    keys
}

/// The n-gram keys of a text, for a store-backed index: the distinct
/// character [`KEY_ORDER`]-grams of the normalized text (see the module doc),
/// hashed to u64, sorted and deduplicated; a text longer than [`MAX_KEYS`]
/// distinct grams keeps the `MAX_KEYS` smallest hashes (the same sample for
/// the same text, with no document frequency needed); a text shorter than a
/// gram gets one key, the hash of all of it. Normalization already keeps
/// punctuation and spaces out of the grams, so no key is made of them alone.
/// Empty for a text without content.
pub fn index_keys(text: &str) -> Vec<u64> {
    keys_of(&normalize(text))
}

/// The rank order of matches: similarity plus [`HUMAN_MARGIN`] for human
/// ones, descending; then human first; then the larger id (the newer row).
fn better(a: &Match, b: &Match) -> Ordering {
    let effective = |m: &Match| m.similarity + if m.human { HUMAN_MARGIN } else { 0.0 };
    effective(b)
        .total_cmp(&effective(a))
        .then(b.human.cmp(&a.human))
        .then(b.id.cmp(&a.id))
}

/// The best `k` of scored matches, in rank order, one per id.
fn best(mut matches: Vec<Match>, k: usize) -> Vec<Match> {
    matches.sort_by(better);
    let mut seen = HashSet::new();
    matches.retain(|m| seen.insert(m.id));
    matches.truncate(k);
    matches
}

/// Scores candidates against one query, reusing its buffers.
struct Scorer {
    query: Grams,
    min: f64,
    /// The candidate's normalized characters.
    chars: Vec<char>,
    used: Vec<u32>,
    hashes: Vec<u64>,
}

impl Scorer {
    fn new(query: &[char], min: f64) -> Self {
        let mut hashes = Vec::new();
        Self {
            query: Grams::new(query, &mut hashes),
            min,
            chars: Vec::new(),
            used: Vec::new(),
            hashes,
        }
    }

    /// The match of the candidate in `self.chars`, unless it scores below
    /// `min`.
    fn score(&mut self, id: u64, human: bool) -> Option<Match> {
        // Lengths alone may rule a candidate out before any n-gram is made.
        if length_bound(self.query.len, self.chars.len()) < self.min {
            return None;
        }
        let similarity = self
            .query
            .score(&self.chars, &mut self.used, &mut self.hashes);
        (similarity >= self.min).then_some(Match {
            id,
            similarity,
            human,
        })
    }

    /// The match of a candidate's source.
    fn source(&mut self, id: u64, source: &str, human: bool) -> Option<Match> {
        normalize_into(source, &mut self.chars);
        self.score(id, human)
    }

    /// The match of a candidate's text, already normalized.
    fn normalized(&mut self, id: u64, text: &str, human: bool) -> Option<Match> {
        self.chars.clear();
        self.chars.extend(text.chars());
        self.score(id, human)
    }
}

/// The best `k` candidates with [`similarity`] to `query` at least `min`.
/// Order: similarity descending, except that a human match ranks above a
/// machine one whose similarity exceeds its own by at most [`HUMAN_MARGIN`]
/// (so of two candidates with the same normalized source the human one comes
/// first); equal after that, the larger id first. A candidate id given twice
/// counts once, at its best. The returned similarity is the plain one.
pub fn rank(
    query: &str,
    candidates: impl IntoIterator<Item = Entry>,
    k: usize,
    min: f64,
) -> Vec<Match> {
    if k == 0 {
        return Vec::new();
    }
    let mut scorer = Scorer::new(&normalize(query), min);
    let matches = candidates
        .into_iter()
        .filter_map(|e| scorer.source(e.id, &e.source, e.human))
        .collect();
    best(matches, k)
}

/// An indexed segment.
#[derive(Debug, Clone)]
struct Slot {
    id: u64,
    /// The normalized source: all a lookup needs, and its keys' origin.
    text: String,
    human: bool,
}

/// An in-memory fuzzy index (per tenant on the local server): segments, an
/// inverted index from [`index_keys`] to segments, and lookups that rank only
/// the segments sharing the most keys with the query.
#[derive(Debug, Clone)]
pub struct FuzzyIndex {
    /// Segments by slot; `None` is a free slot.
    slots: Vec<Option<Slot>>,
    /// Free slots, reused before the vector grows.
    free: Vec<u32>,
    /// Keys of each slot, for the candidates' key overlap (apart from the
    /// slots, as lookups read it for every segment sharing a key).
    key_counts: Vec<u16>,
    /// Slot of each id.
    ids: HashMap<u64, u32>,
    /// Slots holding each key (in no particular order).
    postings: HashMap<u64, Vec<u32>>,
    /// Most candidates ranked per lookup.
    candidates: usize,
    /// Share of the segments above which a key is a stop key.
    stop_share: f64,
}

impl Default for FuzzyIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl FuzzyIndex {
    /// An empty index with [`DEFAULT_CANDIDATES`] and [`DEFAULT_STOP_SHARE`].
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            key_counts: Vec::new(),
            ids: HashMap::new(),
            postings: HashMap::new(),
            candidates: DEFAULT_CANDIDATES,
            stop_share: DEFAULT_STOP_SHARE,
        }
    }

    /// The same index ranking at most `n` candidates per lookup (at least 1):
    /// more finds weaker matches among many similar segments, at the cost of
    /// one [`similarity`] each.
    pub fn with_candidates(mut self, n: usize) -> Self {
        self.candidates = n.max(1);
        self
    }

    /// The same index with keys held by more than `share` of the segments
    /// (and by more than 1000) treated as stop keys, not scanned by lookups.
    pub fn with_stop_share(mut self, share: f64) -> Self {
        self.stop_share = if share.is_nan() {
            DEFAULT_STOP_SHARE
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// Add a segment, replacing the one with the same id. An index already
    /// holding `u32::MAX` segments ignores new ids.
    pub fn insert(&mut self, e: Entry) {
        self.remove(e.id);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => match u32::try_from(self.slots.len()) {
                Ok(s) if s < u32::MAX => {
                    self.slots.push(None);
                    self.key_counts.push(0);
                    s
                }
                _ => return,
            },
        };
        let chars = normalize(&e.source);
        let keys = keys_of(&chars);
        for &k in &keys {
            self.postings.entry(k).or_default().push(slot);
        }
        if let Some(place) = self.slots.get_mut(slot as usize) {
            *place = Some(Slot {
                id: e.id,
                text: chars.into_iter().collect(),
                human: e.human,
            });
        }
        if let Some(count) = self.key_counts.get_mut(slot as usize) {
            // MAX_KEYS bounds the count.
            *count = u16::try_from(keys.len()).unwrap_or(u16::MAX);
        }
        self.ids.insert(e.id, slot);
    }

    /// Remove the segment with this id, if there is one.
    pub fn remove(&mut self, id: u64) {
        let Some(slot) = self.ids.remove(&id) else {
            return;
        };
        let Some(old) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        // Keys are a function of the normalized text (which normalizes to
        // itself), so they need not be stored.
        for k in index_keys(&old.text) {
            if let Some(list) = self.postings.get_mut(&k) {
                if let Some(p) = list.iter().position(|&s| s == slot) {
                    list.swap_remove(p);
                }
                if list.is_empty() {
                    self.postings.remove(&k);
                }
            }
        }
        self.free.push(slot);
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no segment.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The best `k` segments with [`similarity`] to `query` at least `min`,
    /// ordered as by [`rank`]. The query's keys are scanned rarest first, all
    /// but the stop keys and at least a third of them; candidates are the
    /// segments sharing the most scanned keys relative to their key counts
    /// (Dice), at most the candidate bound. A segment sharing no scanned key
    /// is not found, which for matches above [`USEFUL`] is rare.
    pub fn lookup(&self, query: &str, k: usize, min: f64) -> Vec<Match> {
        let chars = normalize(query);
        if k == 0 || chars.is_empty() || self.is_empty() {
            return Vec::new();
        }
        let keys = keys_of(&chars);
        let mut lists: Vec<&[u32]> = keys
            .iter()
            .filter_map(|k| self.postings.get(k))
            .map(Vec::as_slice)
            .collect();
        lists.sort_unstable_by_key(|l| l.len());
        let stop = ((self.stop_share * self.len() as f64) as usize).max(STOP_FLOOR);
        let at_least = (lists.len() / MIN_SCANNED_PART)
            .max(MIN_SCANNED_KEYS)
            .min(lists.len());
        let scanned = lists
            .iter()
            .take_while(|l| l.len() <= stop)
            .count()
            .max(at_least);

        let mut shared = vec![0u16; self.slots.len()];
        let mut touched = Vec::new();
        for list in lists.iter().take(scanned) {
            for &s in *list {
                if let Some(c) = shared.get_mut(s as usize) {
                    if *c == 0 {
                        touched.push(s);
                    }
                    *c = c.saturating_add(1);
                }
            }
        }

        // Dice of the key sets, so long segments sharing many keys by their
        // length alone do not crowd out short close ones.
        let mut ranked: Vec<(f32, u32)> = touched
            .iter()
            .map(|&s| {
                let c = shared.get(s as usize).copied().unwrap_or(0);
                let own = self.key_counts.get(s as usize).copied().unwrap_or(0);
                let dice = f32::from(c) / (keys.len() + usize::from(own)) as f32;
                (dice, s)
            })
            .collect();
        if ranked.len() > self.candidates {
            ranked.select_nth_unstable_by(self.candidates, |a, b| b.0.total_cmp(&a.0));
            ranked.truncate(self.candidates);
        }

        let mut scorer = Scorer::new(&chars, min);
        let matches = ranked
            .iter()
            .filter_map(|&(_, s)| self.slots.get(s as usize).and_then(Option::as_ref))
            .filter_map(|slot| scorer.normalized(slot.id, &slot.text, slot.human))
            .collect();
        best(matches, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    const HEART: &str = include_str!("../../../eval/heart-sutra.tsv");
    const DERGE: &str = include_str!("../tests/data/derge-sutra-excerpt.txt");

    fn heart() -> Vec<&'static str> {
        HEART
            .lines()
            .filter_map(|l| l.split('\t').next())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    fn syllables(line: &str) -> Vec<&str> {
        line.split(|c: char| c.is_whitespace() || is_boundary(c))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// `line` with syllable `at` (modulo the count) replaced by `with`.
    fn replace_syllable(line: &str, at: usize, with: &str) -> String {
        let mut s = syllables(line);
        let i = at % s.len();
        s[i] = with;
        s.join("་") + "།"
    }

    /// `line` without syllable `at` (modulo the count).
    fn drop_syllable(line: &str, at: usize) -> String {
        let mut s = syllables(line);
        s.remove(at % s.len());
        s.join("་") + "།"
    }

    fn entry(id: u64, source: &str, human: bool) -> Entry {
        Entry {
            id,
            source: source.to_string(),
            human,
        }
    }

    #[rstest]
    #[case::same("ཆོས་ཀྱི་སྐུ།", "ཆོས་ཀྱི་སྐུ།")]
    #[case::whitespace("ཆོས་ ཀྱི་\nསྐུ །", "ཆོས་ཀྱི་སྐུ།")]
    #[case::double_shad("ཆོས་ཀྱི། །སྐུ། །", "ཆོས་ཀྱི་སྐུ།")]
    #[case::tsheg_before_shad("ཆོས་ཀྱི་སྐུ་།", "ཆོས་ཀྱི་སྐུ")]
    #[case::head_mark("༄༅། །ཆོས་ཀྱི་སྐུ།", "ཆོས་ཀྱི་སྐུ།")]
    #[case::non_breaking_tsheg("ཆོས༌ཀྱི༌སྐུ།", "ཆོས་ཀྱི་སྐུ།")]
    #[case::short("ཀ", "ཀ།")]
    #[case::latin("Dharma body", "Dharmabody")]
    fn identical_normalized_texts_score_one(#[case] a: &str, #[case] b: &str) {
        assert_eq!(normalize(a), normalize(b));
        assert_eq!(similarity(a, b), 1.0);
        assert_eq!(index_keys(a), index_keys(b));
    }

    #[rstest]
    #[case::disjoint("ཀཁག", "ངཅཆ")]
    #[case::scripts("ཆོས་ཀྱི་སྐུ།", "dharma")]
    #[case::empty("", "ཆོས་ཀྱི།")]
    #[case::no_content("། །", "། །")]
    #[case::both_empty("", "")]
    fn nothing_shared_scores_zero(#[case] a: &str, #[case] b: &str) {
        assert_eq!(similarity(a, b), 0.0);
        assert_eq!(similarity(b, a), 0.0);
    }

    #[test]
    fn similarity_is_symmetric_and_bounded_on_the_heart_sutra() {
        let lines = heart();
        assert_eq!(lines.len(), 48);
        for a in &lines {
            for b in &lines {
                let s = similarity(a, b);
                assert_eq!(s, similarity(b, a), "{a} / {b}");
                assert!((0.0..=1.0).contains(&s));
            }
            assert_eq!(similarity(a, a), 1.0);
        }
    }

    #[test]
    fn a_one_syllable_edit_scores_above_every_other_line() {
        let lines = heart();
        for (i, line) in lines.iter().enumerate() {
            for edited in [
                replace_syllable(line, i * 7 + 3, "རྒྱ"),
                drop_syllable(line, i * 5 + 1),
            ] {
                let own = similarity(&edited, line);
                let others = lines
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, other)| similarity(&edited, other))
                    .fold(0.0, f64::max);
                assert!(own > others, "line {i}: {own} <= {others}");
                assert!(own < 1.0);
            }
        }
    }

    #[test]
    fn more_edits_score_lower() {
        let line = heart()[4];
        let one = replace_syllable(line, 2, "རྒྱ");
        let two = replace_syllable(&one, 9, "རྒྱ");
        assert!(similarity(line, &one) > similarity(line, &two));
        assert!(similarity(line, &two) >= USEFUL);
    }

    #[test]
    fn the_length_bound_is_an_upper_bound() {
        let lines = heart();
        for a in &lines {
            for b in &lines {
                let bound = length_bound(normalize(a).len(), normalize(b).len());
                assert!(similarity(a, b) <= bound + 1e-12);
            }
        }
    }

    #[test]
    fn index_keys_are_deterministic_sorted_distinct_and_bounded() {
        for line in heart() {
            let keys = index_keys(line);
            assert_eq!(keys, index_keys(line));
            assert!(!keys.is_empty());
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(keys.len() <= MAX_KEYS);
        }
        let long = index_keys(DERGE);
        assert_eq!(long.len(), MAX_KEYS);
        // The sample is the smallest hashes of all the grams.
        let chars = normalize(DERGE);
        let mut all: Vec<u64> = chars.windows(KEY_ORDER).map(gram_hash).collect();
        all.sort_unstable();
        all.dedup();
        assert!(all.len() > MAX_KEYS);
        assert_eq!(long, all[..MAX_KEYS]);
        // Grams repeated in a text give one key.
        let line = heart()[0];
        assert_eq!(index_keys(&line.repeat(3)), index_keys(&line.repeat(2)));
    }

    #[rstest]
    #[case::empty("", 0)]
    #[case::punctuation_only("། ། ༄༅", 0)]
    #[case::shorter_than_a_gram("ཀ།", 1)]
    #[case::two_syllables("ཀ་ཁ", 1)]
    #[case::one_gram("ཀཁགང", 1)]
    #[case::two_grams("ཀ་ཁ་ག", 2)]
    fn index_keys_of_short_texts(#[case] text: &str, #[case] count: usize) {
        assert_eq!(index_keys(text).len(), count);
    }

    #[test]
    fn index_keys_hold_no_punctuation_or_space() {
        // Every key is a gram of the normalized text, which holds neither
        // spaces nor shads and no two tshegs in a row.
        let chars = normalize(DERGE);
        assert!(
            !chars
                .iter()
                .any(|&c| c.is_whitespace() || (is_boundary(c) && c != TSHEG))
        );
        assert!(!chars.windows(2).any(|w| w[0] == TSHEG && w[1] == TSHEG));
        assert_ne!(chars.first(), Some(&TSHEG));
        assert_ne!(chars.last(), Some(&TSHEG));
    }

    /// The heart sutra and variants of each line: ids `i`, `100 + i` (one
    /// syllable replaced), `200 + i` (one dropped), `300 + i` (human copy of
    /// the replaced one).
    fn corpus() -> Vec<Entry> {
        let mut out = Vec::new();
        for (i, line) in heart().into_iter().enumerate() {
            let i = i as u64;
            let replaced = replace_syllable(line, i as usize * 3 + 1, "བཀྲ");
            out.push(entry(i, line, false));
            out.push(entry(100 + i, &replaced, false));
            out.push(entry(200 + i, &drop_syllable(line, i as usize * 2), false));
            out.push(entry(300 + i, &replaced.replace('།', "། །"), true));
        }
        out
    }

    fn index_of(entries: &[Entry]) -> FuzzyIndex {
        let mut index = FuzzyIndex::new();
        for e in entries {
            index.insert(e.clone());
        }
        index
    }

    #[test]
    fn lookup_agrees_with_ranking_every_entry() {
        let entries = corpus();
        let index = index_of(&entries);
        assert_eq!(index.len(), entries.len());
        let mut queries: Vec<String> = heart().iter().map(|l| l.to_string()).collect();
        for (i, line) in heart().iter().enumerate() {
            queries.push(replace_syllable(line, i * 5 + 2, "ཞི"));
            queries.push(format!("{line} {}", syllables(line)[0]));
        }
        for q in &queries {
            let exact = rank(q, entries.iter().cloned(), 3, USEFUL);
            assert!(!exact.is_empty(), "{q}");
            assert_eq!(index.lookup(q, 3, USEFUL), exact, "{q}");
            let top = index.lookup(q, 1, 0.0);
            assert_eq!(
                top.first(),
                rank(q, entries.iter().cloned(), 1, 0.0).first()
            );
        }
    }

    #[test]
    fn an_exact_line_finds_itself_and_a_human_revision_wins_a_tie() {
        let entries = corpus();
        let index = index_of(&entries);
        for (i, line) in heart().iter().enumerate() {
            let found = index.lookup(line, 4, 0.0);
            assert_eq!(found[0].id, i as u64, "{line}");
            assert_eq!(found[0].similarity, 1.0);
            // Of the replaced copies, identical once normalized, the human
            // one ranks first.
            let replaced = replace_syllable(line, i * 3 + 1, "བཀྲ");
            let found = index.lookup(&replaced, 2, 0.0);
            assert_eq!(
                found.iter().map(|m| (m.id, m.human)).collect::<Vec<_>>(),
                vec![(300 + i as u64, true), (100 + i as u64, false)]
            );
        }
    }

    #[test]
    fn remove_forgets_an_entry_and_insert_replaces_by_id() {
        let entries = corpus();
        let mut index = index_of(&entries);
        let line = heart()[7];
        assert_eq!(index.lookup(line, 1, 0.0)[0].id, 7);

        index.remove(7);
        assert_eq!(index.len(), entries.len() - 1);
        let found = index.lookup(line, 10, 0.0);
        assert!(!found.is_empty());
        assert!(found.iter().all(|m| m.id != 7 && m.similarity < 1.0));
        index.remove(7);
        index.remove(9_999);
        assert_eq!(index.len(), entries.len() - 1);

        // The freed slot is reused; the id comes back with another text.
        index.insert(entry(7, heart()[8], true));
        assert_eq!(index.len(), entries.len());
        let m = &index.lookup(heart()[8], 1, 0.0)[0];
        assert_eq!((m.id, m.human, m.similarity), (7, true, 1.0));
        // Inserting an id again replaces its segment.
        index.insert(entry(7, line, false));
        assert_eq!(index.len(), entries.len());
        assert_eq!(index.lookup(line, 1, 0.0)[0].id, 7);
        assert_ne!(index.lookup(heart()[8], 1, 0.0)[0].id, 7);

        for e in &entries {
            index.remove(e.id);
        }
        assert!(index.is_empty());
        assert!(index.postings.is_empty(), "no posting left behind");
        assert!(index.lookup(line, 3, 0.0).is_empty());
    }

    fn m(id: u64, similarity: f64, human: bool) -> Match {
        Match {
            id,
            similarity,
            human,
        }
    }

    #[test]
    fn a_human_match_wins_ties_within_the_margin() {
        let ids = |v: Vec<Match>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        // Within the margin the human one comes first; beyond it, not.
        assert_eq!(
            ids(best(vec![m(1, 0.805, false), m(2, 0.8, true)], 2)),
            [2, 1]
        );
        assert_eq!(
            ids(best(vec![m(1, 0.82, false), m(2, 0.8, true)], 2)),
            [1, 2]
        );
        // Equal similarity: human first, then the newer (larger) id.
        assert_eq!(
            ids(best(vec![m(1, 0.7, false), m(2, 0.7, true)], 2)),
            [2, 1]
        );
        assert_eq!(
            ids(best(vec![m(1, 0.7, false), m(2, 0.7, false)], 2)),
            [2, 1]
        );
        // Otherwise by similarity; an id counts once; k bounds the list.
        assert_eq!(
            ids(best(
                vec![
                    m(1, 0.6, false),
                    m(2, 0.9, false),
                    m(1, 0.95, false),
                    m(3, 0.7, true)
                ],
                2
            )),
            [1, 2]
        );
    }

    #[test]
    fn rank_prefers_the_human_revision_of_the_same_source() {
        let line = heart()[2];
        let spaced = line.replace('་', "་ ");
        let found = rank(
            line,
            [
                entry(1, line, false),
                entry(2, &spaced, true),
                entry(3, heart()[3], true),
            ],
            3,
            USEFUL,
        );
        assert_eq!(
            found,
            vec![m(2, 1.0, true), m(1, 1.0, false)],
            "same normalized source: human first; the other line is below USEFUL"
        );
        assert!(rank(line, [entry(1, line, false)], 0, 0.0).is_empty());
        assert!(rank(line, [entry(1, line, false)], 1, f64::NAN).is_empty());
        assert!(FuzzyIndex::new().lookup(line, 3, 0.0).is_empty());
        assert!(index_of(&corpus()).lookup("། །", 3, 0.0).is_empty());
    }

    #[test]
    fn stop_keys_are_skipped_and_common_queries_still_find_their_segment() {
        // 3000 segments that all hold the same phrase, and a
        // pseudo-random sequence of syllables each.
        let pool: Vec<&str> = heart().into_iter().flat_map(syllables).collect();
        let common = "ཤེས་རབ་ཀྱི་ཕ་རོལ་ཏུ་ཕྱིན་པ";
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut entries = Vec::new();
        for id in 0..3_000u64 {
            let mut syls = Vec::new();
            for _ in 0..12 {
                state = mix(state);
                syls.push(pool[(state % pool.len() as u64) as usize]);
            }
            entries.push(entry(id, &format!("{common}་{}།", syls.join("་")), false));
        }
        let index = index_of(&entries);
        let stop = ((DEFAULT_STOP_SHARE * index.len() as f64) as usize).max(STOP_FLOOR);
        let common_keys = index_keys(common);
        assert!(
            common_keys
                .iter()
                .all(|k| index.postings.get(k).is_some_and(|l| l.len() > stop)),
            "the phrase's keys are stop keys"
        );
        for e in entries.iter().step_by(97) {
            let edited = drop_syllable(&e.source, 10);
            let found = index.lookup(&edited, 1, USEFUL);
            assert_eq!(found.first().map(|m| m.id), Some(e.id), "{edited}");
        }
        // A query of nothing but the phrase scans its rarest keys anyway.
        let found = index.lookup(common, 3, 0.0);
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn tuning_keeps_lookups_working() {
        let entries = corpus();
        let mut index = FuzzyIndex::new()
            .with_candidates(0)
            .with_stop_share(f64::NAN);
        for e in &entries {
            index.insert(e.clone());
        }
        let line = heart()[5];
        assert_eq!(index.lookup(line, 1, 0.0)[0].id, 5);
        let index = index.with_stop_share(0.0).with_candidates(1_000);
        assert_eq!(index.lookup(line, 1, 0.0)[0].id, 5);
    }

    proptest! {
        #[test]
        fn similarity_is_symmetric_bounded_and_whole_on_identity(
            a in "[\\u{0F00}-\\u{0FFF} a-z།་]{0,40}",
            b in "[\\u{0F00}-\\u{0FFF} a-z།་]{0,40}",
        ) {
            let s = similarity(&a, &b);
            prop_assert!((0.0..=1.0).contains(&s));
            prop_assert_eq!(s, similarity(&b, &a));
            if !normalize(&a).is_empty() {
                prop_assert_eq!(similarity(&a, &a), 1.0);
            }
            prop_assert!(index_keys(&a).len() <= MAX_KEYS);
            let mut index = FuzzyIndex::new();
            index.insert(Entry { id: 1, source: b.clone(), human: false });
            let found = index.lookup(&a, 1, 0.0);
            prop_assert!(found.iter().all(|m| m.id == 1 && (m.similarity - s).abs() < 1e-12));
        }
    }
}
