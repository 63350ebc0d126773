//! Inline SVG charts for the dashboard: space used and traffic over the
//! last day and month, drawn on the server (the page needs no script).

use std::fmt::Write;

use crate::usage::Sample;

const W: f64 = 600.0;
const H: f64 = 120.0;

/// A chart of `samples` (oldest first): space used as a line, bytes
/// received and sent per slot as bars, each scaled to its own maximum.
/// `title` names it; `label` the span (`last 24 hours`).
pub fn chart(title: &str, label: &str, samples: &[Sample], human: impl Fn(u64) -> String) -> String {
    let mut svg = String::new();
    let max_used = samples.iter().map(|s| s.used).max().unwrap_or(0).max(1);
    let max_traffic = samples.iter().map(|s| s.received.max(s.sent)).max().unwrap_or(0).max(1);
    let n = samples.len().max(1) as f64;
    let step = W / n;
    let _ = write!(
        svg,
        r##"<figure><figcaption>{title}, {label}: space used (line, up to {used}), received and sent per slot (bars, up to {traffic})</figcaption>
<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="{W}" height="{H}" fill="#f6f6f6"/>"##,
        used = human(max_used),
        traffic = human(max_traffic),
    );
    for (i, s) in samples.iter().enumerate() {
        let x = i as f64 * step;
        let bar = |v: u64| v as f64 / max_traffic as f64 * (H - 10.0);
        let (r, t) = (bar(s.received), bar(s.sent));
        let _ = write!(
            svg,
            r##"<rect class="in" x="{x:.1}" y="{:.1}" width="{:.1}" height="{r:.1}" fill="#7ab"/><rect class="out" x="{:.1}" y="{:.1}" width="{:.1}" height="{t:.1}" fill="#d94"/>"##,
            H - r,
            (step / 2.0).max(0.5),
            x + step / 2.0,
            H - t,
            (step / 2.0).max(0.5),
        );
    }
    let points: Vec<String> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let x = i as f64 * step + step / 2.0;
            let y = H - 5.0 - s.used as f64 / max_used as f64 * (H - 10.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        svg,
        r##"<polyline class="used" fill="none" stroke="#2a7" stroke-width="2" points="{}"/></svg></figure>"##,
        points.join(" ")
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_a_bar_pair_per_slot_and_a_line_through_them() {
        let samples: Vec<Sample> =
            (0..10).map(|i| Sample { slot: i, used: i * 100, received: i, sent: 10 - i }).collect();
        let svg = chart("Space and traffic", "last 24 hours", &samples, |b| format!("{b} B"));
        assert_eq!(svg.matches(r#"class="in""#).count(), 10);
        assert_eq!(svg.matches(r#"class="out""#).count(), 10);
        assert!(svg.contains(r#"class="used""#) && svg.contains("up to 900 B"));
        // No samples yet: an empty chart, not a broken one.
        let empty = chart("x", "y", &[], |b| b.to_string());
        assert!(empty.contains("<svg") && empty.ends_with("</svg></figure>"));
    }
}
