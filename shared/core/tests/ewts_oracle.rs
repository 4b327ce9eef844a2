//! EWTS conformance with the reference implementation as oracle: BDRC's
//! pyewts (from PyPI, installed into the project's `.venv` by the test
//! command) converts the same inputs, and the outputs are compared token by
//! token (a token is what lies between spaces, one or more syllables):
//! every syllable of the Tibetan template, Sanskrit stacks and mantras,
//! text without tshegs, punctuation and non-Tibetan characters inside
//! Tibetan text, and ~12,000 syllables of the Derge Kangyur
//! (tests/data/SOURCES.md). Every remaining difference must be listed in
//! tests/data/ewts_known_differences.tsv with its reason.

// Shared with the golden test, which uses all of it.
#[allow(dead_code)]
#[path = "support/wylie_reader.rs"]
mod wylie_reader;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lotsawa_core::ewts::to_ewts;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The reference's EWTS of each line.
fn pyewts(lines: &[String]) -> Vec<String> {
    let python = std::env::var("LOTSAWA_VENV")
        .map_or_else(|_| root().join(".venv"), PathBuf::from)
        .join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test (it installs pyewts into .venv)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(root().join("shared/core/tests/oracle/pyewts_lines.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut input = child.stdin.take().expect("stdin");
    let text = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("pyewts");
    writer.join().expect("writer").expect("write");
    assert!(
        out.status.success(),
        "pyewts failed (is it installed? ./scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .split('\n')
        .map(str::to_owned)
        .collect();
    assert!(got.len() > lines.len(), "one line out per line in");
    got[..lines.len()].to_vec()
}

/// Tokens equal in both, by their longest common subsequence, and the
/// differing stretches (ours, theirs).
fn compare(ours: &str, theirs: &str) -> (usize, usize, Vec<(String, String)>) {
    let a: Vec<&str> = ours.split(' ').filter(|t| !t.is_empty()).collect();
    let b: Vec<&str> = theirs.split(' ').filter(|t| !t.is_empty()).collect();
    let (n, m) = (a.len(), b.len());
    let mut l = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            l[i][j] = if a[i] == b[j] {
                l[i + 1][j + 1] + 1
            } else {
                l[i + 1][j].max(l[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut diffs = Vec::new();
    let (mut da, mut db): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let mut flush = |da: &mut Vec<&str>, db: &mut Vec<&str>| {
        if !da.is_empty() || !db.is_empty() {
            diffs.push((da.join(" "), db.join(" ")));
            da.clear();
            db.clear();
        }
    };
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            flush(&mut da, &mut db);
            i += 1;
            j += 1;
        } else if j >= m || (i < n && l[i + 1][j] >= l[i][j + 1]) {
            da.push(a[i]);
            i += 1;
        } else {
            db.push(b[j]);
            j += 1;
        }
    }
    flush(&mut da, &mut db);
    (l[0][0] as usize, n.max(m), diffs)
}

struct Tally {
    equal: usize,
    total: usize,
    diffs: BTreeMap<(String, String), usize>,
}

fn run(lines: &[String]) -> Tally {
    let theirs = pyewts(lines);
    let mut t = Tally {
        equal: 0,
        total: 0,
        diffs: BTreeMap::new(),
    };
    for (line, want) in lines.iter().zip(&theirs) {
        let (equal, total, diffs) = compare(&to_ewts(line), want);
        t.equal += equal;
        t.total += total;
        for d in diffs {
            *t.diffs.entry(d).or_insert(0) += 1;
        }
    }
    t
}

/// (ours, theirs) pairs the project knows and accepts, with reasons.
fn known() -> BTreeSet<(String, String)> {
    include_str!("data/ewts_known_differences.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            let ours = f.next().unwrap_or_default().to_owned();
            let theirs = f.next().unwrap_or_default().to_owned();
            assert!(
                f.next().is_some_and(|r| !r.trim().is_empty()),
                "every known difference gives its reason: {l}"
            );
            (ours, theirs)
        })
        .collect()
}

fn report(name: &str, t: &Tally) -> f64 {
    // LOTSAWA_ORACLE_DUMP=DIR writes every difference, for study.
    if let Ok(dir) = std::env::var("LOTSAWA_ORACLE_DUMP") {
        let body: String = t
            .diffs
            .iter()
            .map(|((o, p), n)| format!("{o}\t{p}\t{n}\n"))
            .collect();
        let _ = std::fs::write(PathBuf::from(dir).join(format!("{name}.tsv")), body);
    }
    let share = t.equal as f64 / t.total.max(1) as f64;
    eprintln!(
        "{name}: {} of {} tokens agree with pyewts ({:.3}%), {} distinct differences",
        t.equal,
        t.total,
        share * 100.0,
        t.diffs.len()
    );
    share
}

fn unknown(t: &Tally, known: &BTreeSet<(String, String)>) -> Vec<String> {
    t.diffs
        .iter()
        .filter(|(k, _)| !known.contains(*k))
        .map(|((o, p), n)| format!("{o}\t{p}\t({n}×)"))
        .collect()
}

/// The template's syllables that the reference writes back exactly as they
/// were generated (regular Tibetan syllables) must agree; the others (a
/// prefix the root does not take, a suffix pair Tibetan does not have) are
/// irregular, where the two converters follow different conventions (the
/// class is listed in ewts_known_differences.tsv): their agreement is
/// reported, not required.
#[test]
fn template_syllables_agree_with_the_reference() {
    let generated = wylie_reader::template_syllables();
    assert!(generated.len() > 50_000);
    let lines: Vec<String> = generated.iter().map(|(_, u)| u.clone()).collect();
    let theirs = pyewts(&lines);
    let mut regular = Tally {
        equal: 0,
        total: 0,
        diffs: BTreeMap::new(),
    };
    let (mut irregular, mut irregular_equal) = (0usize, 0usize);
    for (((wylie, unicode), want), _) in generated.iter().zip(&theirs).zip(0..) {
        let ours = to_ewts(unicode);
        if want == wylie {
            regular.total += 1;
            if &ours == want {
                regular.equal += 1;
            } else {
                *regular.diffs.entry((ours, want.clone())).or_insert(0) += 1;
            }
        } else {
            irregular += 1;
            irregular_equal += usize::from(&ours == want);
        }
    }
    let share = report("template syllables (regular)", &regular);
    eprintln!(
        "template syllables (irregular, not required): {irregular_equal} of {irregular} agree ({:.1}%)",
        irregular_equal as f64 * 100.0 / irregular.max(1) as f64
    );
    assert!(
        regular.total > 20_000,
        "{} regular syllables",
        regular.total
    );
    assert!(share >= 0.999, "agreement {:.4}% < 99.9%", share * 100.0);
    let left = unknown(&regular, &known());
    assert!(
        left.is_empty(),
        "{} differences not in ewts_known_differences.tsv:\n{}",
        left.len(),
        left.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn sanskrit_punctuation_and_mixed_text_agree_with_the_reference() {
    let lines: Vec<String> = [
        // Mantras and Sanskrit stacks.
        "ཨོཾ་མ་ཎི་པདྨེ་ཧཱུྃ།",
        "ཨོཾ་ཨཱཿ་ཧཱུྃ་བཛྲ་གུ་རུ་པདྨ་སིདྡྷི་ཧཱུྃ།",
        "ཨོཾ་ཏཱ་རེ་ཏུཏྟཱ་རེ་ཏུ་རེ་སྭཱ་ཧཱ།",
        "ན་མོ་བུདྡྷཱ་ཡ། དྷརྨ། སཾ་གྷ། ཀྵ་ཏྲི་ཡ། ཤཱཀྱ་མུ་ནི།",
        "གཏེ་གཏེ་པཱ་ར་གཏེ་པཱ་ར་སཾ་གཏེ་བོ་དྷི་སྭཱ་ཧཱ།",
        "ཧྲཱིཿ ཛྙཱ་ན། ཨཱརྻ། མཉྫུ་ཤྲཱི། ཝཛྲ།",
        // Without tshegs between syllables.
        "བཀྲཤིསབདེལེགས",
        "སངསརྒྱས",
        // Punctuation and other characters inside Tibetan text.
        "༄༅། །ཀ་ཁ། ༎ ག་ང༔ ཅ་ཆ༑",
        "ཀ་ཁ༼ག༽ང་༡༢༣་ཅ།",
        "ཀ༌ཁ་ག",
        "Lotsawa: ཀ་ཁ། (and more) ག་ང།",
        "ཀ་ཁ, ག་ང. ཅ་ཆ!",
        "ཀ་ཁ\tག",
        "  ཀ་ཁ  ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let t = run(&lines);
    report("Sanskrit, punctuation, mixed", &t);
    let left = unknown(&t, &known());
    assert!(
        left.is_empty(),
        "{} differences not in ewts_known_differences.tsv:\n{}",
        left.len(),
        left.join("\n")
    );
}

#[test]
fn a_real_corpus_agrees_with_the_reference() {
    let text = include_str!("data/derge-kangyur-excerpt.txt");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let syllables = text
        .split(['་', '།', ' ', '\n'])
        .filter(|s| !s.is_empty())
        .count();
    assert!(syllables >= 10_000, "{syllables} syllables");
    let t = run(&lines);
    let share = report("Derge Kangyur excerpt", &t);
    assert!(share >= 0.999, "agreement {:.4}% < 99.9%", share * 100.0);
    let left = unknown(&t, &known());
    assert!(
        left.is_empty(),
        "{} differences not in ewts_known_differences.tsv:\n{}",
        left.len(),
        left.join("\n")
    );
}
