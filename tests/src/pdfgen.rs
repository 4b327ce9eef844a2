//! Real PDFs for the tests, made by the tests: Tibetan text set in a font
//! (Noto Serif Tibetan, Tibetan Machine Uni) and printed to PDF by headless
//! Chromium or converted by LibreOffice (Debian's packages; `scripts/test`
//! installs them). Each document is made once per test process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The font a document is set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Font {
    /// Debian's fonts-noto-core.
    Noto,
    /// Debian's fonts-tibetan-machine.
    TibetanMachine,
}

impl Font {
    /// The CSS / ODF family name.
    pub fn family(self) -> &'static str {
        match self {
            Font::Noto => "Noto Serif Tibetan",
            Font::TibetanMachine => "Tibetan Machine Uni",
        }
    }
}

/// What makes the PDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Producer {
    /// `chromium --headless --print-to-pdf`.
    Chromium,
    /// `soffice --headless --convert-to pdf`.
    LibreOffice,
}

/// Which document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Doc {
    /// Several pages of paragraphs.
    MultiPage,
    /// A heading over two columns.
    TwoColumns,
    /// English and Tibetan paragraphs, and a line mixing both.
    Mixed,
}

/// The Tibetan of the shipped eval sample (Derge D21, public domain).
pub fn tibetan_lines() -> Vec<String> {
    include_str!("../../eval/heart-sutra.tsv")
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// English of the mixed document.
pub const ENGLISH: [&str; 2] = [
    "The Heart of the Perfection of Wisdom, in the Tibetan of the Derge Kangyur.",
    "Thus have I heard at one time, on Vulture Peak Mountain.",
];

/// Paragraphs of a document, in reading order; the heading first.
pub fn paragraphs(doc: Doc) -> Vec<String> {
    let lines = tibetan_lines();
    match doc {
        Doc::MultiPage => lines,
        Doc::TwoColumns => std::iter::once(lines[0].clone())
            .chain(lines[1..21].iter().cloned())
            .collect(),
        Doc::Mixed => vec![
            ENGLISH[0].to_owned(),
            lines[0].clone(),
            format!("{} {}", ENGLISH[1], lines[1]),
            lines[2].clone(),
            lines[3].clone(),
        ],
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn html(doc: Doc, font: Font) -> String {
    let p = paragraphs(doc);
    let para = |t: &String| format!("<p>{}</p>", escape(t));
    let body = match doc {
        Doc::TwoColumns => format!(
            "<h1>{}</h1><div style=\"column-count:2;column-gap:2.5em\">{}</div>",
            escape(&p[0]),
            p[1..].iter().map(para).collect::<String>()
        ),
        _ => p.iter().map(para).collect(),
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><style>\
         body{{font-family:\"{}\";font-size:18px}} h1{{font-size:24px}}</style></head>\
         <body>{body}</body></html>",
        font.family()
    )
}

fn fodt(doc: Doc, font: Font) -> String {
    let p = paragraphs(doc);
    let para = |style: &str, t: &String| {
        format!("<text:p text:style-name=\"{style}\">{}</text:p>", escape(t))
    };
    let body = match doc {
        Doc::TwoColumns => format!(
            "{}<text:section text:style-name=\"Cols\" text:name=\"Body\">{}</text:section>",
            para("H", &p[0]),
            p[1..].iter().map(|t| para("P", t)).collect::<String>()
        ),
        _ => p.iter().map(|t| para("P", t)).collect(),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
<office:font-face-decls><style:font-face style:name="T" svg:font-family="'{family}'"/></office:font-face-decls>
<office:automatic-styles>
<style:style style:name="P" style:family="paragraph"><style:paragraph-properties fo:margin-bottom="0.4cm"/><style:text-properties style:font-name="T" style:font-name-complex="T" style:font-name-asian="T" fo:font-size="15pt" style:font-size-complex="15pt" style:font-size-asian="15pt"/></style:style>
<style:style style:name="H" style:family="paragraph"><style:paragraph-properties fo:margin-bottom="0.6cm"/><style:text-properties style:font-name="T" style:font-name-complex="T" style:font-name-asian="T" fo:font-size="20pt" style:font-size-complex="20pt" style:font-size-asian="20pt"/></style:style>
<style:style style:name="Cols" style:family="section"><style:section-properties><style:columns fo:column-count="2" fo:column-gap="1.2cm"/></style:section-properties></style:style>
<style:page-layout style:name="pm1"><style:page-layout-properties fo:page-width="21cm" fo:page-height="29.7cm" fo:margin-top="2cm" fo:margin-bottom="2cm" fo:margin-left="2cm" fo:margin-right="2cm"/></style:page-layout>
</office:automatic-styles>
<office:master-styles><style:master-page style:name="Standard" style:page-layout-name="pm1"/></office:master-styles>
<office:body><office:text>{body}</office:text></office:body></office:document>"#,
        family = font.family()
    )
}

fn program(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.exists(),
        "{} is missing: install Debian's chromium, libreoffice-writer-nogui, fonts-noto-core and \
         fonts-tibetan-machine (scripts/test does), or set {var}",
        p.display()
    );
    p
}

fn workdir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

/// Print `html` to PDF with headless Chromium.
pub fn chromium_pdf(name: &str, html: &str) -> Vec<u8> {
    let chromium = program("LOTSAWA_CHROMIUM", "/usr/bin/chromium");
    let dir = workdir().join(format!("chromium-{name}"));
    std::fs::create_dir_all(&dir).expect("a directory for chromium");
    let page = dir.join("doc.html");
    let out = dir.join("doc.pdf");
    std::fs::write(&page, html).expect("write the page");
    let status = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--print-to-pdf={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run chromium");
    assert!(status.success(), "chromium failed to print {name}");
    std::fs::read(&out).expect("chromium wrote the PDF")
}

/// Convert a flat ODF text document to PDF with LibreOffice; `filter` adds
/// export options (JSON) after `pdf:writer_pdf_Export:`.
pub fn libreoffice_pdf(name: &str, fodt: &str, filter: Option<&str>) -> Vec<u8> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let soffice = program("LOTSAWA_SOFFICE", "/usr/bin/soffice");
    let dir = workdir().join(format!("lo-{name}"));
    std::fs::create_dir_all(&dir).expect("a directory for libreoffice");
    let src = dir.join("doc.fodt");
    std::fs::write(&src, fodt).expect("write the document");
    let convert = match filter {
        Some(f) => format!("pdf:writer_pdf_Export:{f}"),
        None => "pdf".to_owned(),
    };
    let status = Command::new(soffice)
        .args(["--headless", "--norestore"])
        .arg(format!(
            "-env:UserInstallation=file://{}",
            workdir().join("lo-profile").display()
        ))
        .args(["--convert-to", &convert, "--outdir"])
        .arg(&dir)
        .arg(&src)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run soffice");
    assert!(status.success(), "libreoffice failed to convert {name}");
    std::fs::read(dir.join("doc.pdf")).expect("libreoffice wrote the PDF")
}

/// A document as a PDF, made once per process.
pub fn pdf(doc: Doc, font: Font, producer: Producer) -> Vec<u8> {
    type Made = Mutex<HashMap<(Doc, Font, Producer), Vec<u8>>>;
    static MADE: OnceLock<Made> = OnceLock::new();
    let made = MADE.get_or_init(Mutex::default);
    if let Some(b) = made
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(doc, font, producer))
    {
        return b.clone();
    }
    let name = format!("{doc:?}-{font:?}").to_lowercase();
    let bytes = match producer {
        Producer::Chromium => chromium_pdf(&name, &html(doc, font)),
        Producer::LibreOffice => libreoffice_pdf(&name, &fodt(doc, font), None),
    };
    made.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((doc, font, producer), bytes.clone());
    bytes
}

/// A PDF of one page that holds only an image, as a scan does.
pub fn scanned_pdf() -> Vec<u8> {
    // A 2x2 PNG, drawn large.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGNgYGD4z8DAwMDAwMDAAAANBAEAWHeM0QAAAABJRU5ErkJggg==";
    chromium_pdf(
        "scan",
        &format!(
            "<!doctype html><html><body style=\"margin:0\"><img style=\"width:90vw;height:90vh;image-rendering:pixelated\" src=\"data:image/png;base64,{PNG}\"></body></html>"
        ),
    )
}

/// A password-protected PDF of Tibetan text.
pub fn encrypted_pdf() -> Vec<u8> {
    libreoffice_pdf(
        "encrypted",
        &fodt(Doc::Mixed, Font::TibetanMachine),
        Some(
            r#"{"EncryptFile":{"type":"boolean","value":"true"},"DocumentOpenPassword":{"type":"string","value":"secret"}}"#,
        ),
    )
}

/// The Tibetan syllables of `text` (split at tshegs, shads and spaces).
pub fn syllables(text: &str) -> Vec<&str> {
    text.split(|c: char| {
        matches!(
            c,
            '\u{0F0B}' | '\u{0F0C}' | '\u{0F0D}'..='\u{0F11}' | '\u{0F14}'
        ) || c.is_whitespace()
    })
    .filter(|s| !s.is_empty() && s.chars().any(|c| ('\u{0F00}'..='\u{0FFF}').contains(&c)))
    .collect()
}

/// Syllable accuracy of `got` against `want`: the longest common
/// subsequence of their Tibetan syllables over the syllables of `want`.
pub fn syllable_accuracy(want: &str, got: &str) -> f64 {
    let (a, b) = (syllables(want), syllables(got));
    if a.is_empty() {
        return if b.is_empty() { 1.0 } else { 0.0 };
    }
    let mut prev = vec![0u32; b.len() + 1];
    let mut cur = vec![0u32; b.len() + 1];
    for x in &a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    f64::from(prev[b.len()]) / a.len() as f64
}
