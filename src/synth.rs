//! `dpgate synth`: the data owner's synthetic rows as a CSV file, from the
//! same fit (charged once to the dataset budget, kept in the ledger) that
//! answers analysts' row-level SELECTs, with an HTML report of how well
//! the rows match what the fit measured (and, with `--compare-real`, the
//! real table: for the data owner only).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use dpgate_config::{Config, TablePrivacy};
use dpgate_dp::mst::total_variation;
use dpgate_ledger::Ledger;
use dpgate_service::synthetic::{marginal_plans, read_marginals, SyntheticModel};
use dpgate_service::Service;
use dpgate_sql::synth::{Attribute, Values};
use dpgate_sql::{Ask, Cell};

/// What `dpgate synth` was asked for.
pub struct SynthArgs {
    pub config_path: PathBuf,
    pub table: String,
    pub rows: Option<usize>,
    pub out: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub compare_real: bool,
}

/// One marginal shown in the report: its name, value labels, and the
/// distributions compared.
struct Shown {
    name: String,
    labels: Vec<String>,
    synthetic: Vec<f64>,
    measured: Vec<f64>,
    real: Option<Vec<f64>>,
}

pub async fn run(args: SynthArgs, config: Config) -> Result<(), ExitCode> {
    let fail = |what: String| {
        eprintln!("{what}");
        ExitCode::FAILURE
    };
    let (schema, name) = match args.table.split_once('.') {
        Some((s, n)) => (Some(s), n),
        None => (None, args.table.as_str()),
    };
    let Some(table) = config.table(schema, name).cloned() else {
        eprintln!(
            "{} is not declared in {}",
            args.table,
            args.config_path.display()
        );
        return Err(ExitCode::from(2));
    };
    let shown_name = format!("{}.{}", table.schema, table.name);
    let Some(spec) = table.synthetic.clone() else {
        eprintln!(
            "{} declares no [tables.synthetic]: add one under its [[tables]] entry, e.g.\n\n[tables.synthetic]\nepsilon = 1",
            shown_name
        );
        return Err(ExitCode::from(2));
    };
    let ledger = Arc::new(
        Ledger::open(&config.ledger)
            .await
            .map_err(|e| fail(format!("cannot open the ledger {}: {e}", config.ledger)))?,
    );
    let backend = dpgate_backend::connect(&config)
        .await
        .map_err(|e| fail(format!("{e} ([backend] in {})", args.config_path.display())))?;
    let service = Service::new(config.clone(), ledger.clone(), backend.clone(), None);
    let ctx = service.context("data owner", "dpgate synth", Ask::at(spec.epsilon));
    let kept = service
        .synthetic_kept(&ctx, &table.schema, &table.name)
        .await
        .map_err(|e| fail(format!("{}: {}", e.message, e.hint)))?;
    let model = match kept {
        Some(m) => {
            eprintln!(
                "using the fit kept in the ledger (no new charge): {}",
                m.notice()
            );
            m
        }
        None => {
            eprintln!(
                "fitting {} at ε = {} (charged once to the dataset budget)…",
                shown_name, spec.epsilon
            );
            let started = std::time::Instant::now();
            let m = service
                .synthetic_now(&ctx, &table.schema, &table.name)
                .await
                .map_err(|e| fail(format!("{} ({})", e.message, e.hint)))?;
            eprintln!("fitted in {:.1} s", started.elapsed().as_secs_f64());
            m
        }
    };
    let n = args.rows.unwrap_or(spec.rows);
    if let Some(out) = &args.out {
        write_csv(out, &table, &model, n).map_err(|e| fail(format!("{}: {e}", out.display())))?;
        eprintln!("wrote {n} synthetic rows to {}", out.display());
    }
    let real = if args.compare_real {
        eprintln!("reading the real marginals (data owner only; nothing is released)…");
        Some(
            real_marginals(&config, &table, &model, backend.as_ref())
                .await
                .map_err(fail)?,
        )
    } else {
        None
    };
    let shown = marginals(&model, n, real.as_ref());
    let summary = summarize(&shown, model.attributes.modelled.len());
    println!("{summary}");
    if let Some(path) = &args.report {
        std::fs::write(path, report(&shown_name, &model, n, &shown, &summary))
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        eprintln!("wrote the report to {}", path.display());
    }
    service.ledger.flush().await;
    Ok(())
}

/// Writes `n` rows: every declared column, unmodelled ones empty.
fn write_csv(
    path: &Path,
    table: &dpgate_config::Table,
    model: &SyntheticModel,
    n: usize,
) -> std::io::Result<()> {
    let modelled = &model.attributes.modelled;
    let positions: Vec<Option<usize>> = table
        .columns
        .iter()
        .map(|c| modelled.iter().position(|a| a.column == c.name))
        .collect();
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(table.columns.iter().map(|c| c.name.as_str()))?;
    let rows = model.rows(n);
    let step = (n / 10).max(1);
    for (k, row) in rows.iter().enumerate() {
        let record: Vec<String> = positions
            .iter()
            .map(|p| p.map_or(String::new(), |i| cell_text(&row[i])))
            .collect();
        w.write_record(&record)?;
        if (k + 1) % step == 0 {
            eprint!("\rwriting rows: {}%", (k + 1) * 100 / n.max(1));
        }
    }
    eprintln!();
    w.flush()
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => format!("{f}"),
        Cell::Text(t) => t.clone(),
        Cell::Bool(b) => b.to_string(),
    }
}

/// The real table's marginals, planned over a row-level copy of the table
/// (no per-unit bound, values clamped to the declared bounds as bins are).
async fn real_marginals(
    config: &Config,
    table: &dpgate_config::Table,
    model: &SyntheticModel,
    backend: &dyn dpgate_backend::Backend,
) -> Result<dpgate_dp::mst::RawMarginals, String> {
    let mut plain = config.clone();
    for t in &mut plain.tables {
        if t.schema == table.schema && t.name == table.name {
            t.privacy = TablePrivacy::Private {
                privacy_unit: None,
                max_rows_per_unit: 1,
                unique_unit: false,
            };
        }
    }
    let row_level = plain
        .table(Some(&table.schema), &table.name)
        .expect("same tables")
        .clone();
    let plans = marginal_plans(&row_level, &model.attributes.modelled, &plain, None)
        .map_err(|e| e.message)?;
    read_marginals(backend, &plans, &model.attributes).await
}

/// The 1-way marginals and those of the tree's edges: synthetic (from `n`
/// sampled rows), measured (the fit's noisy counts, negatives as 0) and
/// real when read.
fn marginals(
    model: &SyntheticModel,
    n: usize,
    real: Option<&dpgate_dp::mst::RawMarginals>,
) -> Vec<Shown> {
    let attrs = &model.attributes.modelled;
    let fit = &model.fit;
    let (rows, _) = model.sample(n);
    let floats = |v: &[i64]| -> Vec<f64> { v.iter().map(|&x| x.max(0) as f64).collect() };
    let mut out = Vec::new();
    for (i, a) in attrs.iter().enumerate() {
        let mut synthetic = vec![0.0; a.size()];
        for r in &rows {
            synthetic[r[i]] += 1.0;
        }
        out.push(Shown {
            name: a.column.clone(),
            labels: labels(a),
            synthetic,
            measured: floats(&fit.noisy_one[i]),
            real: real.map(|r| floats(&r.one[i])),
        });
    }
    for (e, &(i, j)) in fit.edges.iter().enumerate() {
        let (a, b) = (&attrs[i], &attrs[j]);
        let mut synthetic = vec![0.0; a.size() * b.size()];
        for r in &rows {
            synthetic[r[i] * b.size() + r[j]] += 1.0;
        }
        let (la, lb) = (labels(a), labels(b));
        out.push(Shown {
            name: format!("{} × {}", a.column, b.column),
            labels: la
                .iter()
                .flat_map(|x| lb.iter().map(move |y| format!("{x} · {y}")))
                .collect(),
            synthetic,
            measured: floats(&fit.noisy_two[e]),
            real: real.and_then(|r| r.two.get(&(i, j)).map(|v| floats(v))),
        });
    }
    out
}

fn labels(a: &Attribute) -> Vec<String> {
    match &a.values {
        Values::Bins {
            lower, upper, bins, ..
        } => {
            let w = (upper - lower) / *bins as f64;
            (0..*bins)
                .map(|k| {
                    format!(
                        "[{}, {})",
                        short(lower + w * k as f64),
                        short(lower + w * (k + 1) as f64)
                    )
                })
                .collect()
        }
        Values::Domain(v) => v.clone(),
        Values::Selected(v) => v
            .iter()
            .cloned()
            .chain([dpgate_sql::synth::OTHER.to_string()])
            .collect(),
        Values::Quarters(v, _) => v
            .iter()
            .cloned()
            .chain(["(other quarters)".to_string()])
            .collect(),
        Values::Bool => vec!["false".into(), "true".into()],
    }
}

fn short(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Mean total variation distances, 1-way and on the tree, against what
/// the fit measured and (when read) the real table.
fn summarize(shown: &[Shown], d: usize) -> String {
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let (one, two) = shown.split_at(d.min(shown.len()));
    let tv = |s: &[Shown], real: bool| -> Vec<f64> {
        s.iter()
            .filter_map(|m| {
                let other = if real { m.real.as_ref()? } else { &m.measured };
                Some(total_variation(&m.synthetic, other))
            })
            .collect()
    };
    let mut text = format!(
        "total variation, synthetic vs measured (noisy): 1-way mean {:.4} over {} columns; 2-way on the tree mean {:.4} over {} edges",
        mean(&tv(one, false)),
        one.len(),
        mean(&tv(two, false)),
        two.len()
    );
    if shown.iter().any(|m| m.real.is_some()) {
        let _ = write!(
            text,
            "\ntotal variation, synthetic vs real (data owner only): 1-way mean {:.4}; 2-way on the tree mean {:.4}",
            mean(&tv(one, true)),
            mean(&tv(two, true))
        );
    }
    text
}

/// The self-contained HTML report: summary, then each marginal as small
/// bar charts (inline SVG, no scripts, no network).
fn report(name: &str, model: &SyntheticModel, n: usize, shown: &[Shown], summary: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Synthetic rows of {n_} — dpgate</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}\
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
th{{background:#f3f3f3}}.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}\
figure{{margin:1.5em 0}}figcaption{{font-weight:600}}</style></head><body>\
<h1>Synthetic rows of {n_}</h1><p>{notice}</p><p>{n} rows sampled. The <em>measured</em> marginals are the noisy counts the fit released; \
the <em>real</em> ones (only with <code>--compare-real</code>, for the data owner) are read from the table and must not be shared.</p>\
<pre>{summary}</pre><p class=\"legend\"><span style=\"background:#3b7dd8\"></span>synthetic<span style=\"background:#e3912b\"></span>measured\
<span style=\"background:#5aa55a\"></span>real</p><table><tr><th>marginal</th><th>cells</th><th>TV vs measured</th><th>TV vs real</th></tr>",
        n_ = crate::html::escape(name),
        notice = crate::html::escape(&model.notice()),
        summary = crate::html::escape(summary),
    );
    for m in shown {
        let _ = write!(
            h,
            "<tr><td style=\"text-align:left\">{}</td><td>{}</td><td>{:.4}</td><td>{}</td></tr>",
            crate::html::escape(&m.name),
            m.labels.len(),
            total_variation(&m.synthetic, &m.measured),
            m.real.as_ref().map_or("—".into(), |r| format!(
                "{:.4}",
                total_variation(&m.synthetic, r)
            ))
        );
    }
    h.push_str("</table>");
    for m in shown {
        let _ = write!(
            h,
            "<figure><figcaption>{}</figcaption>{}</figure>",
            crate::html::escape(&m.name),
            chart(m)
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// Grouped bars of the normalized distributions of one marginal.
fn chart(m: &Shown) -> String {
    let norm = |v: &[f64]| -> Vec<f64> {
        let s: f64 = v.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        v.iter().map(|x| x / s).collect()
    };
    let mut series = vec![
        ("#3b7dd8", norm(&m.synthetic)),
        ("#e3912b", norm(&m.measured)),
    ];
    if let Some(r) = &m.real {
        series.push(("#5aa55a", norm(r)));
    }
    crate::html::bar_chart(&m.labels, &series)
}
