//! One query's evaluation: plan, neighbour, backend runs, plain answer,
//! trials on both sides, then the four tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dpgate_backend::{Backend, BackendQuery};
use dpgate_config::Config;
use dpgate_sql::{Cell, Plan, RawGroup};
use futures::StreamExt;

use crate::checks::{self, CellSamples, Samples};
use crate::neighbour::{self, fetch_text};
use crate::trials::{self, normalise_text, number, release_once, Bounded, Rows};
use crate::{truth, Event, Options, Progress, QueryResult, WorkItem};

/// One run of a paired backend query ([`dpgate_sql::Prepared::bind_paired`]):
/// the rows of D and of D − u, drawn with the same randomness for every
/// other unit.
async fn fetch_pair(
    backend: &dyn Backend,
    plan: &Plan,
    paired: &str,
) -> Result<(Vec<RawGroup>, Vec<RawGroup>), String> {
    let mut rows: Vec<RawGroup> = Vec::new();
    let query = BackendQuery {
        sql: paired,
        keys: plan.grouping.key_count() + 1,
        measurements: plan.release.raw_len(),
    };
    backend
        .fetch_into(query, &mut rows)
        .await
        .map_err(|e| e.to_string())?;
    let (mut d, mut n) = (Vec::new(), Vec::new());
    for mut row in rows {
        let side = row.keys.remove(0);
        match side.as_deref() {
            Some("d") => d.push(row),
            _ => n.push(row),
        }
    }
    Ok((d, n))
}

/// A candidate neighbour, run: how far it moved the raw measurements,
/// why it was picked, and its paired backend query.
struct Tried {
    score: f64,
    moved: f64,
    reach: f64,
    why: String,
    sql: String,
}

/// What one query's evaluation works with.
pub(crate) struct Job<'a> {
    pub config: &'a Config,
    pub backend: &'a Arc<dyn Backend>,
    pub item: &'a WorkItem,
    pub options: &'a Options,
    /// This query's share of the run's family-wise error.
    pub alpha: f64,
    pub progress: &'a Progress,
}

pub(crate) async fn evaluate_one(job: Job<'_>) -> QueryResult {
    let started = Instant::now();
    let mut result = QueryResult {
        line: job.item.line,
        sql: job.item.sql.clone(),
        epsilon: 0.0,
        delta: 0.0,
        plan: String::new(),
        error: None,
        neighbour: None,
        privacy: None,
        accuracy: None,
        utility: None,
        bias: Vec::new(),
        bias_pass: false,
        reach: 0.0,
        pair_loss: None,
        seconds: 0.0,
    };
    if let Err(e) = run(&job, &mut result).await {
        result.error = Some(e);
    }
    result.seconds = started.elapsed().as_secs_f64();
    result
}

async fn run(job: &Job<'_>, result: &mut QueryResult) -> Result<(), String> {
    let Job {
        config,
        backend,
        item,
        options,
        alpha,
        progress,
    } = *job;
    let refused = |r: dpgate_sql::Refusal| format!("dpgate refuses it: {} ({})", r.message, r.hint);
    let mut plan = item
        .prepared
        .bind(&[], &item.ask, config)
        .map_err(refused)?;
    // The claim is the honest plan's charge, whatever the self-check does
    // to the noise after.
    let cost = plan.cost();
    if let Some(factor) = options.understate {
        plan.release = trials::understated(&plan.release, factor);
    }
    result.epsilon = cost.epsilon_f64();
    result.delta = cost.delta;
    result.plan = format!(
        "{}, bounding {}",
        if plan.mechanism.gaussian {
            "discrete Gaussian"
        } else {
            "discrete Laplace"
        },
        match plan.bounding {
            dpgate_sql::Bounding::None => "none",
            dpgate_sql::Bounding::Tables => "per table",
            dpgate_sql::Bounding::PreAggregated => "per-unit pre-aggregation",
            dpgate_sql::Bounding::RowSampled => "row sampling",
        }
    );
    let rows = Rows::of(&plan);
    let backend = backend.as_ref();

    progress(Event::Step("choosing the neighbour"));
    let tables = item.prepared.tables(config);
    let words = neighbour::words(&item.sql);
    let ranking = truth::unit_ranking(&item.prepared, config);
    let found = neighbour::candidates(
        backend,
        config,
        &tables,
        ranking.as_ref(),
        &words,
        options.candidates,
    )
    .await?;
    // Two backend queries at a time (one per core here). Each candidate's
    // paired run gives D and D − u under the same random draws.
    let tried: Vec<Result<Tried, String>> = futures::stream::iter(found.into_iter().enumerate())
        .map(|(i, c)| {
            let plan = &plan;
            async move {
                let paired = item
                    .prepared
                    .bind_paired(&item.ask, config, &c.unit)
                    .map_err(refused)?;
                let (d, n) = fetch_pair(backend, plan, &paired.backend_sql).await?;
                let (moved, reach, keys_changed) = neighbour::movement(plan, &d, &n);
                // Ties go to a candidate that changes the groups, then
                // to the one listed first.
                let score = moved + if keys_changed { 1e-6 } else { 0.0 } - i as f64 * 1e-9;
                Ok(Tried {
                    score,
                    moved,
                    reach,
                    why: c.why,
                    sql: paired.backend_sql,
                })
            }
        })
        .buffered(2)
        .collect()
        .await;
    let mut best: Option<Tried> = None;
    for t in tried {
        let t = t?;
        if best.as_ref().is_none_or(|b| t.score > b.score) {
            best = Some(t);
        }
    }
    let Some(Tried {
        moved,
        reach,
        why,
        sql: paired_sql,
        ..
    }) = best
    else {
        return Err("no privacy unit found to remove (are the tables empty?)".into());
    };
    result.neighbour = Some((why, moved));
    result.reach = reach;

    // Backend randomness (row sampling, allowances, randomized rounding)
    // is part of the test: several fresh paired runs when the query draws
    // any (not the run the neighbour was chosen on, which would favour the
    // draw that moved most).
    let runs = if plan.backend_sql.contains("random()") {
        options.backend_runs.max(1)
    } else {
        1
    };
    progress(Event::Step("running the paired backend query"));
    let (mut on_d, mut on_n) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (d, n) = fetch_pair(backend, &plan, &paired_sql).await?;
        on_d.push(d);
        on_n.push(n);
    }

    progress(Event::Step("running the plain query"));
    let (plain, plain_missing) = match plain_answer(backend, config, item, &plan, &rows).await {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e)),
    };

    let confidence = config.privacy.confidence;
    let max_groups = config.privacy.max_groups;
    let bounded_d: Vec<_> = on_d
        .iter()
        .map(|r| trials::noiseless(&plan, &rows, r, confidence))
        .collect();
    let bounded_n: Vec<_> = on_n
        .iter()
        .map(|r| trials::noiseless(&plan, &rows, r, confidence))
        .collect();
    let (tracked_key, tracked_column) = tracked(&rows, &bounded_d[0], &bounded_n[0]);
    result.pair_loss = rows
        .aggregate_columns
        .iter()
        .find(|(c, _)| *c == tracked_column)
        .zip(bounded_d[0].get(&tracked_key))
        .zip(bounded_n[0].get(&tracked_key))
        .and_then(|(((_, output), d), n)| {
            neighbour::pair_loss(&plan.release, *output, &d.raw, &n.raw, result.delta)
        });
    let tracked_label = format!(
        "{} of row {tracked_key}",
        column_label(&plan, tracked_column)
    );

    let n = options.trials.max(10);
    let plan = Arc::new(plan);
    let side = |runs: Vec<Vec<RawGroup>>, bounded: Vec<HashMap<String, Bounded>>, cells: bool| {
        let plan = plan.clone();
        let rows = rows.clone();
        let key = tracked_key.clone();
        let plain = plain.clone();
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = Samples::default();
            for t in 0..n {
                let r = t % runs.len();
                let answer = release_once(&plan, &runs[r], max_groups, confidence);
                let mut keys = Vec::new();
                let mut value = None;
                for (i, row) in answer.rows.iter().enumerate() {
                    let k = rows.key(&plan, i, row);
                    if k == key {
                        value = number(&row[tracked_column]);
                    }
                    if cells {
                        record(
                            &mut s,
                            &plan,
                            &rows,
                            &k,
                            row,
                            &answer.half_widths[i],
                            &bounded[r],
                            plain.as_ref(),
                        );
                    }
                    keys.push(k);
                }
                keys.sort();
                s.tracked_d.push(value);
                s.keys_d.push(keys.join("\u{1f}"));
                if cells && (t + 1) % 100 == 0 {
                    progress(Event::Trials {
                        done: t + 1,
                        total: n,
                    });
                }
            }
            s
        })
    };
    progress(Event::Step("releasing on D and on D − u"));
    let (d, nb) = futures::join!(side(on_d, bounded_d, true), side(on_n, bounded_n, false));
    let mut samples = d.map_err(|e| e.to_string())?;
    let nb = nb.map_err(|e| e.to_string())?;
    samples.tracked_neighbour = nb.tracked_d;
    samples.keys_neighbour = nb.keys_d;

    result.privacy = Some(checks::privacy(
        &samples,
        tracked_label,
        result.epsilon,
        result.delta,
        alpha,
        n / 5,
    ));
    result.accuracy = Some(checks::accuracy(
        &samples,
        confidence,
        n,
        alpha,
        plain_missing,
    ));
    result.utility = Some(checks::utility(&samples, result.epsilon));
    result.bias = checks::bias(&samples, &plan.release, n);
    Ok(())
}

/// Keeps one released row's aggregate values with their bounded and plain answers.
#[allow(clippy::too_many_arguments)]
fn record(
    s: &mut Samples,
    plan: &Plan,
    rows: &Rows,
    key: &str,
    row: &[Cell],
    widths: &[Option<f64>],
    bounded: &HashMap<String, Bounded>,
    plain: Option<&HashMap<String, Vec<Option<f64>>>>,
) {
    if !rows.matchable() {
        return;
    }
    let Some(bounded_row) = bounded.get(key) else {
        return;
    };
    for &(c, output) in &rows.aggregate_columns {
        let (Some(v), Some(w), Some(b)) =
            (number(&row[c]), widths[c], number(&bounded_row.cells[c]))
        else {
            continue;
        };
        let cell = s
            .cells
            .entry(format!("{} of row {key}", column_label(plan, c)))
            .or_insert_with(|| CellSamples {
                output,
                plain: plain.and_then(|p| p.get(key)).and_then(|r| r[c]),
                ..CellSamples::default()
            });
        cell.released.push(v);
        cell.half_width.push(w);
        cell.bounded.push(b);
    }
}

/// Column `c`'s name, with its position when another column has the same
/// name (two `avg` columns).
fn column_label(plan: &Plan, c: usize) -> String {
    let name = &plan.columns[c].name;
    if plan.columns.iter().filter(|o| o.name == *name).count() > 1 {
        format!("{name} (column {})", c + 1)
    } else {
        name.clone()
    }
}

/// The value whose bounded answer moves most between D and D − u, in
/// interval half-widths: (row key, column).
fn tracked(
    rows: &Rows,
    d: &HashMap<String, Bounded>,
    n: &HashMap<String, Bounded>,
) -> (String, usize) {
    let mut best: Option<(f64, String, usize)> = None;
    let mut keys: Vec<&String> = d.keys().collect();
    keys.sort();
    for k in keys {
        let (Some(a), Some(b)) = (d.get(k), n.get(k)) else {
            continue;
        };
        for &(c, _) in &rows.aggregate_columns {
            if let (Some(x), Some(y)) = (number(&a.cells[c]), number(&b.cells[c])) {
                let score = (x - y).abs() / a.widths[c].unwrap_or(1.0).max(1e-300);
                if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                    best = Some((score, k.clone(), c));
                }
            }
        }
    }
    match best {
        Some((_, k, c)) => (k, c),
        None => {
            let first = d.keys().min().cloned().unwrap_or_else(|| "#1".into());
            (first, rows.aggregate_columns.first().map_or(0, |(c, _)| *c))
        }
    }
}

/// The plain answer per row key: each output column as a number where it is one.
async fn plain_answer(
    backend: &dyn Backend,
    config: &Config,
    item: &WorkItem,
    plan: &Plan,
    rows: &Rows,
) -> Result<HashMap<String, Vec<Option<f64>>>, String> {
    if rows.key_columns.is_empty() && !matches!(plan.grouping, dpgate_sql::Grouping::None) {
        return Err(
            "rows cannot be matched with the plain answer: select the GROUP BY keys".into(),
        );
    }
    let sql = truth::plain_sql(&item.prepared, config)?;
    let width = plan.columns.len();
    let found = fetch_text(backend, &sql, width)
        .await
        .map_err(|e| format!("the backend cannot run the plain query as written ({e})"))?;
    let mut out = HashMap::new();
    for (i, cells) in found.iter().enumerate() {
        let key = if rows.key_columns.is_empty() {
            format!("#{}", i + 1)
        } else {
            rows.key_columns
                .iter()
                .map(|&c| match &cells[c] {
                    None => "NULL".to_string(),
                    Some(t) => normalise_text(t, plan.columns[c].ty),
                })
                .collect::<Vec<_>>()
                .join(" · ")
        };
        let values = cells
            .iter()
            .map(|c| c.as_deref().and_then(|t| t.trim().parse::<f64>().ok()))
            .collect();
        out.insert(key, values);
    }
    Ok(out)
}
