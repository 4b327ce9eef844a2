//! Print the text Lotsawa reads from a PDF: `cargo run -p lotsawa-pdf --example pdftext FILE.pdf`.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: pdftext FILE.pdf");
        std::process::exit(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    match lotsawa_pdf::extract(&bytes, &lotsawa_pdf::Options::default()) {
        Ok(x) => {
            print!("{}", x.text);
            eprintln!(
                "pages {} actualtext {} table {} shaping {} syllables {} malformed {}",
                x.pages,
                x.from_actual_text,
                x.from_font_table,
                x.from_shaping,
                x.syllables,
                x.malformed
            );
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
