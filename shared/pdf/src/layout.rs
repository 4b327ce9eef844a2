//! Reading order: glyph texts into lines, columns and paragraphs.

use lotsawa_core::segment::{is_combining, is_shad};

/// A piece of text at a position (one glyph, one `ActualText` span or one
/// recovered run).
#[derive(Debug, Clone)]
pub struct Item {
    /// Start, page space.
    pub x: f32,
    /// Baseline.
    pub y: f32,
    /// Where it ends.
    pub end: f32,
    /// Font size.
    pub size: f32,
    /// Its text.
    pub text: String,
}

/// Consecutive items on one baseline with no wide gap between them.
#[derive(Debug, Clone)]
struct Segment {
    x0: f32,
    x1: f32,
    y: f32,
    size: f32,
    text: String,
}

fn tibetan(c: char) -> bool {
    ('\u{0F00}'..='\u{0FFF}').contains(&c)
}

fn segments(items: &[Item]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for it in items {
        if it.text.is_empty() {
            continue;
        }
        let size = it.size.max(0.1);
        if let Some(s) = out.last_mut() {
            let em = s.size.max(size);
            let gap = it.x - s.x1;
            let same_line = (it.y - s.y).abs() <= 0.5 * em;
            if same_line && gap <= 0.8 * em && gap >= -1.5 * em && it.x >= s.x0 - 0.5 * em {
                let prev = s.text.chars().last().unwrap_or(' ');
                let next = it.text.chars().next().unwrap_or(' ');
                let threshold = if tibetan(prev) && tibetan(next) {
                    0.6
                } else {
                    0.2
                };
                if gap > threshold * em
                    && !prev.is_whitespace()
                    && !next.is_whitespace()
                    && !is_combining(next)
                {
                    s.text.push(' ');
                }
                s.text.push_str(&it.text);
                s.x1 = s.x1.max(it.end);
                s.size = em;
                continue;
            }
        }
        out.push(Segment {
            x0: it.x,
            x1: it.end.max(it.x),
            y: it.y,
            size,
            text: it.text.clone(),
        });
    }
    out
}

fn median(mut v: Vec<f32>) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some(v[v.len() / 2])
}

/// A vertical gutter no segment crosses, with columns of at least three
/// segments on each side (two across a wide gutter) that share the same
/// height: the split x.
fn x_cut(segs: &[Segment]) -> Option<f32> {
    if segs.len() < 4 {
        return None;
    }
    let em = median(segs.iter().map(|s| s.size).collect()).unwrap_or(10.0);
    let mut sorted: Vec<&Segment> = segs.iter().collect();
    sorted.sort_by(|a, b| a.x0.total_cmp(&b.x0));
    let mut max_x1 = f32::MIN;
    for k in 0..sorted.len() {
        // Two lines a side make columns only across a wide gutter.
        let fewest = k.min(sorted.len() - k);
        let gutter = if fewest >= 3 { 0.8 } else { 1.5 };
        if fewest >= 2 && sorted[k].x0 - max_x1 > gutter * em {
            let cut = (max_x1 + sorted[k].x0) / 2.0;
            let (left, right): (Vec<&Segment>, Vec<&Segment>) =
                segs.iter().partition(|s| s.x1 <= cut);
            let span = |v: &[&Segment]| {
                let top = v.iter().map(|s| s.y).fold(f32::MIN, f32::max);
                let bottom = v.iter().map(|s| s.y).fold(f32::MAX, f32::min);
                (bottom, top)
            };
            let ((lb, lt), (rb, rt)) = (span(&left), span(&right));
            let overlap = lt.min(rt) - lb.max(rb);
            let smaller = (lt - lb).min(rt - rb);
            if overlap >= 0.5 * smaller {
                return Some(cut);
            }
        }
        max_x1 = max_x1.max(sorted[k].x1);
    }
    None
}

/// Regions in reading order (each one a single column).
fn order(segs: Vec<Segment>, depth: usize, out: &mut Vec<Vec<Segment>>) {
    if segs.is_empty() {
        return;
    }
    if depth < 8 && segs.len() <= 4000 {
        if let Some(cut) = x_cut(&segs) {
            // Lines above or below the part where both columns run (a
            // heading or footer across the gutter, or one well apart) are
            // read before or after the columns.
            let crosses = |s: &Segment| s.x0 < cut && s.x1 > cut;
            // Each column's own baselines (not those crossing the gutter),
            // top to bottom.
            let column_ys = |left: bool| {
                let mut ys: Vec<f32> = segs
                    .iter()
                    .filter(|s| !crosses(s) && (s.x1 <= cut) == left)
                    .map(|s| s.y)
                    .collect();
                ys.sort_by(|a, b| b.total_cmp(a));
                ys
            };
            let (left_ys, right_ys) = (column_ys(true), column_ys(false));
            let span = |ys: &[f32]| {
                (
                    ys.last().copied().unwrap_or(f32::MAX),
                    ys.first().copied().unwrap_or(f32::MIN),
                )
            };
            let ((lb, lt), (rb, rt)) = (span(&left_ys), span(&right_ys));
            // Line spacing within a column.
            let column_pitch = |ys: &[f32]| {
                median(
                    ys.windows(2)
                        .map(|w| w[0] - w[1])
                        .filter(|d| *d > 1.0)
                        .collect(),
                )
            };
            let pitch = column_pitch(&left_ys)
                .into_iter()
                .chain(column_pitch(&right_ys))
                .fold(0.0f32, f32::max)
                .max(1.0);
            let (lo, hi) = (lb.max(rb), lt.min(rt));
            // A column's own lines beyond the other's run on (a longer
            // column); past a wide gap they are a footer or a heading.
            let apart_at = |ys: &[f32]| {
                let below = ys
                    .windows(2)
                    .find(|w| w[1] < lo && w[0] - w[1] > 2.5 * pitch)
                    .map_or(f32::MIN, |w| w[1]);
                let above = ys
                    .windows(2)
                    .rev()
                    .find(|w| w[0] > hi && w[0] - w[1] > 2.5 * pitch)
                    .map_or(f32::MAX, |w| w[0]);
                (below, above)
            };
            let (left_apart, right_apart) = (apart_at(&left_ys), apart_at(&right_ys));
            let outside = |s: &Segment| {
                if s.y <= hi + 0.5 && s.y >= lo - 0.5 {
                    return false;
                }
                if crosses(s) {
                    return true;
                }
                let (below, above) = if s.x1 <= cut { left_apart } else { right_apart };
                s.y <= below || s.y >= above
            };
            if segs.iter().any(outside) {
                let (apart, middle): (Vec<Segment>, Vec<Segment>) =
                    segs.into_iter().partition(|s| outside(s));
                let (above, below): (Vec<Segment>, Vec<Segment>) =
                    apart.into_iter().partition(|s| s.y > hi);
                order(above, depth + 1, out);
                order(middle, depth + 1, out);
                order(below, depth + 1, out);
                return;
            }
            let (left, right): (Vec<Segment>, Vec<Segment>) =
                segs.into_iter().partition(|s| s.x1 <= cut);
            order(left, depth + 1, out);
            order(right, depth + 1, out);
            return;
        }
        // A band above or below a multi-column part (a heading, a footer).
        let mut ys: Vec<f32> = segs.iter().map(|s| s.y).collect();
        ys.sort_by(|a, b| b.total_cmp(a));
        ys.dedup_by(|a, b| (*a - *b).abs() < 1.0);
        for w in ys.windows(2) {
            let cut = (w[0] + w[1]) / 2.0;
            let (upper, lower): (Vec<Segment>, Vec<Segment>) =
                segs.iter().cloned().partition(|s| s.y > cut);
            if x_cut(&upper).is_some() || x_cut(&lower).is_some() {
                order(upper, depth + 1, out);
                order(lower, depth + 1, out);
                return;
            }
        }
    }
    out.push(segs);
}

/// Lines of one column, top to bottom.
struct Line {
    y: f32,
    size: f32,
    x0: f32,
    x1: f32,
    text: String,
}

fn lines(mut segs: Vec<Segment>) -> Vec<Line> {
    segs.sort_by(|a, b| b.y.total_cmp(&a.y).then(a.x0.total_cmp(&b.x0)));
    let mut out: Vec<Line> = Vec::new();
    for s in segs {
        if let Some(l) = out.last_mut()
            && (s.y - l.y).abs() <= 0.5 * l.size.max(s.size)
        {
            let gap = s.x0 - l.x1;
            if gap > 0.2 * l.size && !l.text.ends_with(' ') {
                l.text.push(' ');
            }
            l.text.push_str(&s.text);
            l.x1 = l.x1.max(s.x1);
            continue;
        }
        out.push(Line {
            y: s.y,
            size: s.size,
            x0: s.x0,
            x1: s.x1,
            text: s.text,
        });
    }
    out
}

/// The text of one page: columns in order, paragraphs on lines of their
/// own, the lines of a paragraph joined.
pub fn page_text(items: &[Item]) -> String {
    let mut regions = Vec::new();
    let segs = segments(items);
    order(segs, 0, &mut regions);
    let columns: Vec<Vec<Line>> = regions.into_iter().map(lines).collect();
    // The tightest line spacing is the spacing inside a paragraph.
    let pitch = columns
        .iter()
        .flat_map(|c| c.windows(2).map(|w| w[0].y - w[1].y))
        .filter(|p| *p > 0.0)
        .fold(None, |m: Option<f32>, p| Some(m.map_or(p, |m| m.min(p))));
    let mut out = String::new();
    for col in columns {
        let left = col.iter().map(|l| l.x0).fold(f32::MAX, f32::min);
        let right = col.iter().map(|l| l.x1).fold(f32::MIN, f32::max);
        let mut prev: Option<&Line> = None;
        for line in &col {
            let text = line.text.trim();
            if text.is_empty() {
                continue;
            }
            if let Some(p) = prev {
                let gap = p.y - line.y;
                let wide_gap = match pitch {
                    Some(m) => gap > 1.3 * m || gap < 0.0,
                    None => gap > 2.0 * line.size,
                };
                // A line that ends well before the column's edge ends its paragraph.
                let short = p.x1 < right - 0.15 * (right - left);
                if wide_gap || short {
                    out.push('\n');
                } else {
                    // A Tibetan line wraps after a syllable: no space is lost.
                    let last = out.chars().last().unwrap_or(' ');
                    if !tibetan(last) || is_shad(last) {
                        out.push(' ');
                    }
                }
            } else if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(text);
            prev = Some(line);
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(x: f32, y: f32, text: &str) -> Item {
        Item {
            x,
            y,
            end: x + 60.0,
            size: 10.0,
            text: text.into(),
        }
    }

    #[test]
    fn two_columns_read_left_then_right() {
        let mut items = vec![item(50.0, 820.0, "Title")];
        items[0].end = 500.0;
        items.push(item(50.0, 790.0, "Title2"));
        items[1].end = 500.0;
        for i in 0..4 {
            let y = 700.0 - 30.0 * i as f32;
            items.push(item(50.0, y, &format!("L{i}")));
            items.push(item(300.0, y, &format!("R{i}")));
        }
        items.push(item(50.0, 100.0, "Footer"));
        assert_eq!(
            page_text(&items),
            "Title Title2\nL0 L1 L2 L3\nR0 R1 R2 R3\nFooter\n"
        );
    }

    #[test]
    fn wrapped_tibetan_lines_join_and_gaps_make_paragraphs() {
        let items = vec![
            item(50.0, 700.0, "བཅོམ་"),
            item(50.0, 680.0, "ལྡན།"),
            item(50.0, 660.0, "one"),
            item(50.0, 640.0, "two"),
            item(50.0, 580.0, "three"),
        ];
        assert_eq!(page_text(&items), "བཅོམ་ལྡན། one two\nthree\n");
    }
}
