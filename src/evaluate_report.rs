//! The evaluator's reports: a summary for the terminal and a
//! self-contained HTML page (summary table; per query the tracked value's
//! histograms on D and D − u overlaid, the error distribution, and each
//! test's numbers). The JSON report is the [`Evaluation`] itself.

use std::fmt::Write;

use dpgate_evaluate::{Evaluation, QueryResult};

use crate::html::{bar_chart, escape, short};

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "—",
    }
}

/// Utility flags answers; it fails nothing.
fn flag(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "ok",
        Some(false) => "FLAG",
        None => "—",
    }
}

fn percent(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{:.1}%", v * 100.0))
}

/// One line per query and the verdict, for the terminal.
pub fn summary(e: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4}  {:>8}  {:<22} {:<18} {:<12} {:<10} {:<5}  query",
        "line", "ε", "privacy (ε lower bd)", "accuracy (coverage)", "utility", "bias", "time"
    );
    for q in &e.queries {
        let p = q.privacy.as_ref();
        let a = q.accuracy.as_ref();
        let u = q.utility.as_ref();
        let _ = writeln!(
            out,
            "{:>4}  {:>8}  {:<22} {:<18} {:<12} {:<10} {:>4.1}s  {}",
            q.line,
            short(q.epsilon),
            p.map_or("—".into(), |p| format!(
                "{} ({:.3})",
                verdict(Some(p.pass)),
                p.epsilon_lower
            )),
            a.map_or("—".into(), |a| format!(
                "{} ({})",
                verdict(Some(a.pass)),
                percent(a.coverage.or(Some(a.coverage_bounded)))
            )),
            u.map_or("—".into(), |u| format!(
                "{} ({})",
                flag(Some(u.pass)),
                percent(u.median_relative_error)
            )),
            verdict(q.error.is_none().then_some(q.bias_pass)),
            q.seconds,
            one_line(&q.sql, 70),
        );
        if let Some(err) = &q.error {
            let _ = writeln!(out, "      error: {err}");
        }
    }
    let failed = e.queries.iter().filter(|q| !q.passed()).count();
    let _ = write!(
        out,
        "{} of {} queries passed privacy, accuracy and bias ({} releases per side, α = {}, {:.0} s)",
        e.queries.len() - failed,
        e.queries.len(),
        e.trials,
        e.alpha,
        e.seconds,
    );
    if let (Some(f), Some(caught)) = (e.self_check, e.self_check_caught()) {
        let exposed = e.exposed().len();
        let _ = write!(
            out,
            "\nSELF-CHECK (sensitivity understated {f}×): the privacy test {} on the {exposed} queries where the broken noise admits a loss of at least {}× the charge and more than the trials resolve",
            if caught {
                "failed, as it must,"
            } else {
                "did NOT fail everywhere it must"
            },
            dpgate_evaluate::EXPOSED_MARGIN,
        );
    }
    out
}

/// pass, FAIL, or INCONCLUSIVE when the charge is beyond what the trials
/// can test.
fn privacy_verdict(p: &dpgate_evaluate::Privacy) -> &'static str {
    if p.claimed >= p.ceiling {
        "INCONCLUSIVE"
    } else {
        verdict(Some(p.pass))
    }
}

fn one_line(sql: &str, max: usize) -> String {
    let s: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    } else {
        s
    }
}

/// The HTML report.
pub fn html(e: &Evaluation) -> String {
    let failed = e.queries.iter().filter(|q| !q.passed()).count();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>dpgate evaluate</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}}\
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}}\
th{{background:#f3f3f3}}td.q{{text-align:left;font-family:monospace;font-size:12px}}.FAIL{{color:#b00020;font-weight:700}}\
.pass{{color:#207020}}.FLAG,.INCONCLUSIVE{{color:#a05a00;font-weight:700}}section{{border-top:1px solid #ddd;margin-top:2em}}.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}\
.banner{{background:#fde2e2;padding:8px;border:1px solid #b00020}}</style></head><body>\
<h1>dpgate evaluate</h1><p class=\"banner\">For the data owner only: computed from the real data; do not share with analysts.</p>{banner}<p><b class=\"{cls}\">{verdict}</b>: {ok} of {n} queries passed privacy, accuracy and bias. \
Backend {backend}; {trials} releases on each of D and D − u per query; α = {alpha} (Bonferroni over the run); \
intervals at {conf}% confidence; {secs:.0} s.</p>\
<p>Each query's neighbour D − u is D without the privacy unit whose removal moved its raw measurements most. \
<em>Privacy</em>: empirical ε lower bound (Clopper–Pearson, over bins and tails of the tracked value and over released key sets) against the ε charged. \
<em>Accuracy</em>: share of released values whose plain answer lies in the reported interval. \
<em>Utility</em>: median relative error; values whose interval is wider than the value are flagged. \
<em>Bias</em>: t-test of released − bounded answer; expected biases (clamping, nonlinear derivations) are reported, not failed.</p>\
<table><tr><th>line</th><th>query</th><th>ε</th><th>δ</th><th>privacy</th><th>ε lower bound</th><th>accuracy</th><th>coverage</th>\
<th>utility</th><th>median rel. error</th><th>bias</th><th>time</th></tr>",
        banner = e.self_check.map_or(String::new(), |f| format!(
            "<p class=\"banner\">SELF-CHECK: every noise was calibrated for a sensitivity {f}× too small; the privacy test is expected to fail.</p>"
        )),
        cls = if failed == 0 { "pass" } else { "FAIL" },
        verdict = if failed == 0 { "PASS" } else { "FAIL" },
        ok = e.queries.len() - failed,
        n = e.queries.len(),
        backend = e.backend,
        trials = e.trials,
        alpha = e.alpha,
        conf = e.confidence * 100.0,
        secs = e.seconds,
    );
    for (i, q) in e.queries.iter().enumerate() {
        let p = q.privacy.as_ref();
        let a = q.accuracy.as_ref();
        let u = q.utility.as_ref();
        let cell = |pass: Option<bool>| {
            let v = verdict(pass);
            format!("<td class=\"{v}\">{v}</td>")
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"q\"><a href=\"#q{i}\">{}</a></td><td>{}</td><td>{}</td>{}<td>{}</td>{}<td>{}</td>{}<td>{}</td>{}<td>{:.1} s</td></tr>",
            q.line,
            escape(&one_line(&q.sql, 90)),
            short(q.epsilon),
            short(q.delta),
            {
                let v = p.map_or("—", privacy_verdict);
                format!("<td class=\"{v}\">{v}</td>")
            },
            p.map_or("—".into(), |p| format!("{:.3}", p.epsilon_lower)),
            cell(a.map(|a| a.pass)),
            a.map_or("—".into(), |a| percent(a.coverage.or(Some(a.coverage_bounded)))),
            {
                let v = u.map_or("—", |u| flag(Some(u.pass)));
                format!("<td class=\"{v}\">{v}</td>")
            },
            u.map_or("—".into(), |u| percent(u.median_relative_error)),
            cell(q.error.is_none().then_some(q.bias_pass)),
            q.seconds,
        );
    }
    h.push_str("</table>");
    for (i, q) in e.queries.iter().enumerate() {
        section(&mut h, i, q);
    }
    h.push_str("</body></html>\n");
    h
}

fn section(h: &mut String, i: usize, q: &QueryResult) {
    let _ = write!(
        h,
        "<section id=\"q{i}\"><h2>Line {}</h2><pre>{}</pre><p>ε = {}, δ = {}; {}.</p>",
        q.line,
        escape(&q.sql),
        short(q.epsilon),
        short(q.delta),
        escape(&q.plan)
    );
    if let Some(err) = &q.error {
        let _ = write!(
            h,
            "<p class=\"FAIL\">Not evaluated: {}</p></section>",
            escape(err)
        );
        return;
    }
    if let Some((why, moved)) = &q.neighbour {
        let _ = write!(
            h,
            "<p>Neighbour: D without {} (its removal moves a raw measurement by {:.1} noise standard deviations).</p>",
            escape(why),
            moved
        );
    }
    if let Some(loss) = q.pair_loss {
        let _ = write!(
            h,
            "<p>On this pair the tested value's noise admits a privacy loss of {} (the charge is {}).</p>",
            short(loss),
            short(q.epsilon)
        );
    }
    if let Some(p) = &q.privacy {
        let mut labels: Vec<String> = Vec::new();
        for b in 0..=p.edges.len() {
            labels.push(match b {
                0 if p.edges.is_empty() => "all".into(),
                0 => format!("< {}", short(p.edges[0])),
                b if b == p.edges.len() => format!("≥ {}", short(p.edges[b - 1])),
                b => format!("[{}, {})", short(p.edges[b - 1]), short(p.edges[b])),
            });
        }
        labels.push("not released".into());
        let norm = |v: &[u64]| -> Vec<f64> {
            let s = v.iter().sum::<u64>().max(1) as f64;
            v.iter().map(|x| *x as f64 / s).collect()
        };
        let _ = write!(
            h,
            "<h3>Privacy: <span class=\"{v}\">{v}</span></h3><p>Tracked value: {}. Empirical ε lower bound {:.3}{} against the ε charged, {} (δ = {}), from {} releases per side after calibration; these trials can show a loss up to {:.2}.</p>\
<p class=\"legend\"><span style=\"background:#3b7dd8\"></span>on D<span style=\"background:#e3912b\"></span>on D − u</p>{}",
            escape(&p.tracked),
            p.epsilon_lower,
            p.key_sets.map_or(String::new(), |k| format!(" (key sets alone: {k:.3})")),
            short(p.claimed),
            short(p.delta),
            p.trials,
            p.ceiling,
            bar_chart(
                &labels,
                &[("#3b7dd8", norm(&p.histogram_d)), ("#e3912b", norm(&p.histogram_neighbour))]
            ),
            v = privacy_verdict(p),
        );
    }
    if let Some(a) = &q.accuracy {
        let _ = write!(
            h,
            "<h3>Accuracy: <span class=\"{v}\">{v}</span></h3><p>{} values tested{}{}. Coverage of the plain answer {} and of the bounded answer {}; each value must reach {:.0}% less {:.1} points (chance, at these trials). \
Mean error, in interval half-widths: bounding {}, noise {:.2}.{}</p>",
            a.values,
            if a.conditioned > 0 { format!(" ({} released only in some trials, not tested)", a.conditioned) } else { String::new() },
            a.worst.as_ref().map_or(String::new(), |(w, c)| format!("; lowest coverage {} for {}", percent(Some(*c)), escape(w))),
            percent(a.coverage),
            percent(Some(a.coverage_bounded)),
            a.confidence * 100.0,
            a.tolerance * 100.0,
            a.bounding_error.map_or("—".into(), |b| format!("{b:.2}")),
            a.noise_error,
            a.plain_missing.as_ref().map_or(String::new(), |m| format!(" No plain answer: {}.", escape(m))),
            v = verdict(Some(a.pass)),
        );
    }
    if let Some(u) = &q.utility {
        let _ = write!(
            h,
            "<h3>Utility: <span class=\"{v}\">{v}</span></h3><p>Relative error: mean {}, median {}; interval width relative to the value: median {}.</p>",
            percent(u.mean_relative_error),
            percent(u.median_relative_error),
            percent(u.median_relative_width),
            v = flag(Some(u.pass)),
        );
        for (value, eps) in &u.useless {
            let _ = write!(
                h,
                "<p class=\"FLAG\">{}: the interval is wider than the value; ε ≈ {} would make it a tenth of it.</p>",
                escape(value),
                short(*eps)
            );
        }
        h.push_str(&error_chart(&u.errors));
    }
    let _ = write!(
        h,
        "<h3>Bias: <span class=\"{v}\">{v}</span></h3><table><tr><th>value</th><th>mean error</th><th>p</th><th>clamping bias</th><th>expected</th></tr>",
        v = verdict(Some(q.bias_pass))
    );
    for b in q.bias.iter().take(40) {
        let _ = write!(
            h,
            "<tr><td class=\"q\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"q\">{}</td></tr>",
            escape(&b.value),
            short(b.mean_error),
            b.p_value.map_or("—".into(), |p| format!("{p:.3}")),
            b.clamping_bias.map_or("—".into(), short),
            escape(b.expected.as_deref().unwrap_or("")),
        );
    }
    if q.bias.len() > 40 {
        let _ = write!(
            h,
            "<tr><td class=\"q\">… {} more in the JSON report</td></tr>",
            q.bias.len() - 40
        );
    }
    h.push_str("</table></section>");
}

/// The distribution of signed relative errors, in 21 bins.
fn error_chart(errors: &[f64]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let reach = errors.iter().fold(0.0f64, |m, e| m.max(e.abs())).max(1e-12);
    let bins = 21usize;
    let mut counts = vec![0.0; bins];
    for e in errors {
        let b = (((e / reach) + 1.0) / 2.0 * bins as f64).floor() as usize;
        counts[b.min(bins - 1)] += 1.0;
    }
    let labels: Vec<String> = (0..bins)
        .map(|b| percent(Some((b as f64 + 0.5) / bins as f64 * 2.0 * reach - reach)))
        .collect();
    format!(
        "<p>Signed relative error (released − truth) / |truth| of {} releases:</p>{}",
        errors.len(),
        bar_chart(&labels, &[("#3b7dd8", counts)])
    )
}
