//! `lotsawa transliterate` on a file, end to end as a process, against
//! pyewts, the reference converter, on the same Derge Kangyur text. Skipped
//! (with a note on stderr) when the `lotsawa` binary or pyewts is missing,
//! so the smoke run needs neither.

use std::path::PathBuf;
use std::time::Instant;

use crate::args::Sizes;
use crate::report::Figures;

/// The figures of this scenario, added to `figures` (none when skipped).
pub(crate) fn run(sizes: Sizes, figures: &mut Figures) {
    if let Some((ours, pyewts)) = transliterate_vs_pyewts(sizes.text_bytes) {
        let what = format!(
            "transliterate a {:.1} MB file end to end",
            sizes.text_bytes as f64 / 1e6
        );
        figures.add(format!("{what}: lotsawa transliterate"), "MB/s", ours);
        figures.add(format!("{what}: pyewts (reference)"), "MB/s", pyewts);
        figures.add(format!("{what}: lotsawa / pyewts"), "×", ours / pyewts);
    }
}

/// `lotsawa transliterate FILE` end to end (a process, reading the file and
/// writing to a pipe) and then pyewts, the reference converter, on the same
/// file of `bytes` of Derge Kangyur text: MB/s of each, once per harness run
/// (the harness takes the medians). `None` when the `lotsawa` binary (built
/// next to this one) or pyewts (`LOTSAWA_VENV` or `.venv`, installed by
/// scripts/test) is missing.
fn transliterate_vs_pyewts(bytes: usize) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let lotsawa = exe.with_file_name(format!("lotsawa{}", std::env::consts::EXE_SUFFIX));
    let venv = std::env::var_os("LOTSAWA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv"));
    let python = venv.join("bin").join("python");
    let has_pyewts = std::process::Command::new(&python)
        .args(["-c", "import pyewts"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !lotsawa.exists() || !has_pyewts {
        eprintln!(
            "transliterate: skipped ({} and pyewts in {} are needed)",
            lotsawa.display(),
            venv.display()
        );
        return None;
    }
    let corpus = include_str!("../../../shared/core/tests/data/derge-kangyur-excerpt.txt");
    let dir = tempfile::tempdir().ok()?;
    let file = dir.path().join("derge.txt");
    std::fs::write(&file, corpus.repeat(bytes / corpus.len() + 1)).ok()?;
    let size = std::fs::metadata(&file).ok()?.len() as f64;
    let timed = |cmd: &mut std::process::Command| -> Option<f64> {
        let t = Instant::now();
        let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
        let secs = t.elapsed().as_secs_f64();
        (out.status.success() && !out.stdout.is_empty()).then_some(size / 1e6 / secs)
    };
    let ours = timed(
        std::process::Command::new(&lotsawa)
            .arg("transliterate")
            .arg(&file),
    )?;
    let reference = timed(
        std::process::Command::new(&python)
            .args([
                "-c",
                "import sys, pyewts; sys.stdout.write(pyewts.pyewts().toWylie(open(sys.argv[1], encoding='utf-8').read()))",
            ])
            .arg(&file),
    )?;
    Some((ours, reference))
}
