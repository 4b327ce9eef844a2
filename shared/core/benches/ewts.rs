//! EWTS transliteration throughput: `cargo bench -p lotsawa-core --bench ewts`.
//! Prints the median of 7 runs over a ~4 MB text built from the golden file.

use std::time::Instant;

fn main() {
    let golden = include_str!("../tests/data/ewts_golden.tsv");
    let sample: String = golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t').map(|(bo, _)| format!("{bo}\n")))
        .collect();
    let text = sample.repeat((4 << 20) / sample.len() + 1);
    let mut times = Vec::new();
    let mut out_len = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let out = lotsawa_core::ewts::to_ewts(&text);
        times.push(t.elapsed().as_secs_f64());
        out_len = out.len();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "ewts: {:.1} MB of Tibetan UTF-8 in {:.3} s median of 7 = {:.1} MB/s ({} bytes out)",
        text.len() as f64 / 1e6,
        median,
        text.len() as f64 / 1e6 / median,
        out_len
    );
}
