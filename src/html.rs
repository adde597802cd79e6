//! Pieces of the self-contained HTML reports (`dpgate synth --report`,
//! `dpgate evaluate --report`): escaping and inline SVG bar charts, so a
//! report opens anywhere with no network.

use std::fmt::Write;

/// `s` safe inside HTML text and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Grouped bars: one group per label, one bar per series (colour,
/// values), scaled to the largest value; labels are listed under the
/// chart when there are few enough to read.
pub fn bar_chart(labels: &[String], series: &[(&str, Vec<f64>)]) -> String {
    let top = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let cells = labels.len().max(1);
    let bar = (900.0 / (cells * series.len().max(1)) as f64).clamp(1.0, 14.0);
    let group = bar * series.len() as f64 + 2.0;
    let (w, height) = (group * cells as f64 + 40.0, 120.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{:.0}\" role=\"img\">",
        height + 20.0
    );
    for (c, label) in labels.iter().enumerate() {
        let x0 = 30.0 + c as f64 * group;
        for (k, (color, v)) in series.iter().enumerate() {
            let value = v.get(c).copied().unwrap_or(0.0);
            let hgt = value / top * height;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{hgt:.1}\" fill=\"{color}\"><title>{}: {:.4}</title></rect>",
                x0 + k as f64 * bar,
                height - hgt,
                escape(label),
                value
            );
        }
    }
    let _ = write!(
        svg,
        "<line x1=\"30\" y1=\"{height}\" x2=\"{w:.0}\" y2=\"{height}\" stroke=\"#888\"/>\
<text x=\"0\" y=\"10\" font-size=\"10\">{}</text><text x=\"0\" y=\"{height}\" font-size=\"10\">0</text></svg>",
        short(top)
    );
    if labels.len() <= 16 {
        let names: Vec<String> = labels.iter().map(|l| escape(l)).collect();
        svg.push_str(&format!(
            "<div style=\"font-size:11px;color:#555\">{}</div>",
            names.join(" · ")
        ));
    }
    svg
}

/// A number in a few significant digits.
pub fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if (1e-3..1e6).contains(&a) {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.digits$}")
    } else {
        format!("{x:.3e}")
    }
}
