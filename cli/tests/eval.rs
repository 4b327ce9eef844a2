//! `lotsawa eval` end to end: the real binary translates a corpus through
//! the fake provider and through the offline engine, and reports chrF,
//! chrF++ and BLEU as sacrebleu computes them (the scorer itself is checked
//! against sacrebleu's figures in `lotsawa_core::score`).

use std::process::Command;

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::provider::fake_translation;
use serde_json::Value;

fn eval(args: &[&str], provider: Option<&FakeProvider>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lotsawa"));
    cmd.arg("eval")
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("LOTSAWA_ENGINE")
        .env_remove("LOTSAWA_DB")
        .env("LOTSAWA_RETRY_BASE_MS", "10");
    match provider {
        Some(p) => {
            cmd.env("OPENAI_BASE_URL", p.base_url())
                .env("LOTSAWA_MODEL", "fake-model");
        }
        None => {
            cmd.env_remove("OPENAI_BASE_URL");
        }
    }
    cmd.output().expect("run lotsawa eval")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_scores_an_engine_on_a_corpus() {
    let provider = FakeProvider::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let sources = ["བྱང་ཆུབ་སེམས་དཔའ།", "སངས་རྒྱས་ཆོས་དང་ཚོགས།", "ཀ་ཁ་ག།"];
    // The first reference is what the fake provider answers: chrF 100.
    let references = [
        fake_translation(sources[0]),
        "The Buddha, the Dharma and the Sangha".to_owned(),
        "ka kha ga".to_owned(),
    ];
    let corpus = dir.path().join("corpus.tsv");
    let mut text = String::from("# a test corpus\n");
    for (s, r) in sources.iter().zip(&references) {
        text.push_str(&format!("{s}\t{r}\n"));
    }
    std::fs::write(&corpus, text).expect("write");
    let path = corpus.to_str().expect("path");

    let out = eval(&[path, "--engine", "openai", "--json"], Some(&provider));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["engine"], "openai");
    assert_eq!(v["model"], "fake-model");
    let segs = v["segments"].as_array().expect("segments");
    assert_eq!(segs.len(), 3);
    let mut pairs = Vec::new();
    for ((seg, s), r) in segs.iter().zip(sources).zip(&references) {
        assert_eq!(seg["source"], s);
        assert_eq!(seg["reference"], r.as_str());
        assert_eq!(
            seg["hypothesis"],
            fake_translation(s).as_str(),
            "through the provider"
        );
        pairs.push((fake_translation(s), r.clone()));
    }
    let refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(h, r)| (h.as_str(), r.as_str()))
        .collect();
    let want = lotsawa_core::score::score(&refs);
    assert_eq!(segs[0]["chrf"], 100.0);
    for (seg, c) in segs.iter().zip(&want.segment_chrf) {
        assert_eq!(seg["chrf"].as_f64(), Some(*c));
    }
    assert_eq!(v["chrf"].as_f64(), Some(want.chrf));
    assert_eq!(v["chrfpp"].as_f64(), Some(want.chrfpp));
    assert_eq!(v["bleu"].as_f64(), Some(want.bleu));
    assert!(want.chrf > 0.0 && want.chrf < 100.0, "{want:?}");

    // The offline engine, with a table and a summary line.
    let out = eval(&[path, "--engine", "offline"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = String::from_utf8(out.stdout).expect("utf-8");
    assert!(table.contains("engine offline"), "{table}");
    assert!(table.contains("chrF++"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" | ")).count(),
        4,
        "a header and 3 rows: {table}"
    );

    // A segment the provider refuses: scored as empty, exit 3.
    provider.start_outage(400, "0");
    let other = dir.path().join("other.tsv");
    std::fs::write(&other, "ང་ཅ།\tnga ca\n").expect("write");
    let out = eval(
        &[
            other.to_str().expect("path"),
            "--engine",
            "openai",
            "--json",
        ],
        Some(&provider),
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["segments"][0]["hypothesis"], "");
    assert!(
        v["segments"][0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("provider_rejected"))
    );
    provider.end_outage();

    // A corpus line without a tab: exit 1, the line named.
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, "ཀ་ཁ།\tka kha\nno tab here\n").expect("write");
    let out = eval(&[bad.to_str().expect("path")], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}
