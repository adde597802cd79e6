//! MST: a differentially private model of a table, to sample synthetic
//! rows from (McKenna, Miklau and Sheldon, "Winning the NIST Contest: A
//! Scalable and General Approach to Differentially Private Synthetic
//! Data", 2021).
//!
//! Attributes are finite: each column's values are bins or domain entries
//! (`0..size`), chosen from the config, never from data. The input is the
//! raw, contribution-bounded count of every cell of every 1-way and 2-way
//! marginal (one unit contributes at most `k` rows to each), which the
//! backend computes; none of it leaves this module except through noise.
//!
//! **The fit, and its privacy.** With a zCDP budget ρ split in thirds:
//! 1. *1-way marginals* (ρ/3 over the `d` attributes): each marginal gets
//!    discrete Gaussian noise per cell. One unit's ≤ k rows change one
//!    marginal by a nonnegative vector summing to ≤ k, whose squared L2
//!    norm is ≤ k², so each marginal at ρ/(3d) is ρ/(3d)-zCDP.
//! 2. *Tree selection* (ρ/3 over `d − 1` rounds): Kruskal's maximum
//!    spanning tree, each edge picked by the exponential mechanism among
//!    the pairs that join two components, scored by how badly the
//!    independence model of the noisy 1-way marginals (post-processing)
//!    fits the raw 2-way marginal: `Σ |c_ab − round(ĉ_ab)|`. One unit
//!    moves the counts by an L1 total ≤ k and the model not at all, so the
//!    score sensitivity is k; each round at ε_r is ε_r²/8-zCDP
//!    ([`crate::selection`]), with ε_r the largest rational whose
//!    `(d − 1) ε_r²/8 ≤ ρ/3`.
//! 3. *2-way marginals on the tree* (ρ/3 over the `d − 1` edges), as in 1.
//!
//! zCDP composes by addition, so the fit is ρ-zCDP with ρ the exact sum
//! [`Fit::rho`] (never above the budget); a ledger charges it as the
//! (ε, δ) it converts to. Everything after — making the noisy tables
//! consistent and nonnegative, and sampling rows root to leaf — reads
//! only noisy values: post-processing, free.

use rand::Rng;

use crate::gaussian::DiscreteGaussian;
use crate::rational::Rational;
use crate::samplers::SecureRng;
use crate::selection::ExponentialMechanism;

/// Raw (bounded, noiseless) marginal counts, as the backend returns them.
#[derive(Debug, Clone)]
pub struct RawMarginals {
    /// Number of values of each attribute.
    pub sizes: Vec<usize>,
    /// `one[i][a]`: rows with attribute i = a.
    pub one: Vec<Vec<i64>>,
    /// `two[(i, j)]` for i < j, row-major: `[a * sizes[j] + b]`.
    pub two: std::collections::BTreeMap<(usize, usize), Vec<i64>>,
}

/// Why a fit cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// Fewer than one attribute, an empty domain, or missing marginals.
    #[error("the marginals do not match the attributes: {0}")]
    Shape(String),
    /// ρ or k out of range for the mechanisms.
    #[error("the budget cannot be split over this table: {0}")]
    Budget(String),
}

/// A fitted tree model: what was measured (noisy) and the consistent
/// probabilities sampling reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Number of values of each attribute.
    pub sizes: Vec<usize>,
    /// The tree's edges as chosen, `(i, j)` with i < j.
    pub edges: Vec<(usize, usize)>,
    /// Noisy 1-way marginals as measured.
    pub noisy_one: Vec<Vec<i64>>,
    /// Noisy 2-way marginals of the tree edges as measured (row-major).
    pub noisy_two: Vec<Vec<i64>>,
    /// Consistent estimated probabilities of each attribute.
    pub one: Vec<Vec<f64>>,
    /// Consistent estimated joint probabilities of each edge (row-major).
    pub two: Vec<Vec<f64>>,
    /// Estimated number of rows.
    pub rows: f64,
    /// The ρ spent, exactly.
    pub rho: Rational,
}

/// How a budget ρ is spent on `d` attributes with `k` rows per unit.
#[derive(Debug, Clone)]
struct Shares {
    one: DiscreteGaussian,
    two: Option<DiscreteGaussian>,
    select: Option<ExponentialMechanism>,
}

impl Shares {
    fn new(rho: &Rational, d: usize, k: u64) -> Result<Shares, FitError> {
        let third = rho.div(&Rational::integer(3)).expect("3 is not zero");
        let per = |n: usize| third.div(&Rational::integer(n as u64)).expect("n > 0");
        let k2 = k
            .checked_mul(k)
            .ok_or_else(|| FitError::Budget(format!("k = {k} is too large")))?;
        let gaussian =
            |r: Rational| DiscreteGaussian::new(k2, r).map_err(|e| FitError::Budget(e.to_string()));
        if d == 1 {
            // No pairs: the whole budget measures the one marginal.
            return Ok(Shares {
                one: gaussian(rho.clone())?,
                two: None,
                select: None,
            });
        }
        let one = gaussian(per(d))?;
        // ε_r: the largest double-derived rational with (d−1) ε_r²/8 ≤ ρ/3.
        let target = per(d - 1).mul(&Rational::integer(8));
        let mut guess = target.to_f64().sqrt();
        let epsilon = loop {
            let e = Rational::from_f64(guess)
                .ok_or_else(|| FitError::Budget("ε of a selection round".into()))?;
            if e.mul(&e) <= target {
                break e;
            }
            guess *= 1.0 - 1e-12;
        };
        let select =
            ExponentialMechanism::new(epsilon, k).map_err(|e| FitError::Budget(e.to_string()))?;
        Ok(Shares {
            one,
            two: Some(gaussian(per(d - 1))?),
            select: Some(select),
        })
    }

    /// The exact ρ of the whole fit.
    fn rho(&self, d: usize) -> Rational {
        let times = |r: &Rational, n: usize| r.mul(&Rational::integer(n as u64));
        let mut rho = times(self.one.rho(), d);
        if let (Some(two), Some(select)) = (&self.two, &self.select) {
            rho = rho
                .add(&times(two.rho(), d - 1))
                .add(&times(&select.rho(), d - 1));
        }
        rho
    }
}

/// Fits MST to `raw` at zCDP budget `rho`, with at most `k` rows per unit
/// in every marginal.
pub fn fit<R: SecureRng + ?Sized>(
    raw: &RawMarginals,
    rho: &Rational,
    k: u64,
    rng: &mut R,
) -> Result<Fit, FitError> {
    let d = raw.sizes.len();
    check_shape(raw)?;
    let shares = Shares::new(rho, d, k)?;
    let noisy_one: Vec<Vec<i64>> = raw.one.iter().map(|m| noisy(&shares.one, m, rng)).collect();
    let one_est: Vec<Vec<f64>> = noisy_one.iter().map(|m| nonnegative(m)).collect();
    let rows = one_est.iter().map(|m| m.iter().sum::<f64>()).sum::<f64>() / d as f64;
    let edges = match &shares.select {
        Some(select) => choose_tree(raw, &one_est, rows, select, rng),
        None => Vec::new(),
    };
    let noisy_two: Vec<Vec<i64>> = match &shares.two {
        Some(two) => edges.iter().map(|e| noisy(two, &raw.two[e], rng)).collect(),
        None => Vec::new(),
    };
    let (one, two, rows) = estimate(&raw.sizes, &edges, &noisy_one, &noisy_two, &shares);
    Ok(Fit {
        sizes: raw.sizes.clone(),
        edges,
        noisy_one,
        noisy_two,
        one,
        two,
        rows,
        rho: shares.rho(d),
    })
}

fn check_shape(raw: &RawMarginals) -> Result<(), FitError> {
    let d = raw.sizes.len();
    if d == 0 || raw.sizes.contains(&0) || raw.one.len() != d {
        return Err(FitError::Shape(format!(
            "{d} attributes, {} 1-way marginals",
            raw.one.len()
        )));
    }
    for (i, m) in raw.one.iter().enumerate() {
        if m.len() != raw.sizes[i] {
            return Err(FitError::Shape(format!(
                "attribute {i} has {} cells",
                m.len()
            )));
        }
    }
    for i in 0..d {
        for j in i + 1..d {
            match raw.two.get(&(i, j)) {
                Some(m) if m.len() == raw.sizes[i] * raw.sizes[j] => {}
                _ => return Err(FitError::Shape(format!("the marginal of ({i}, {j})"))),
            }
        }
    }
    Ok(())
}

fn noisy<R: SecureRng + ?Sized>(g: &DiscreteGaussian, counts: &[i64], rng: &mut R) -> Vec<i64> {
    counts
        .iter()
        .map(|&c| {
            let v = g.release(c, rng);
            v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
        })
        .collect()
}

fn nonnegative(m: &[i64]) -> Vec<f64> {
    m.iter().map(|&c| c.max(0) as f64).collect()
}

/// Kruskal's maximum spanning tree with each edge chosen by the
/// exponential mechanism among pairs joining two components.
fn choose_tree<R: SecureRng + ?Sized>(
    raw: &RawMarginals,
    one: &[Vec<f64>],
    rows: f64,
    select: &ExponentialMechanism,
    rng: &mut R,
) -> Vec<(usize, usize)> {
    let d = raw.sizes.len();
    let probability = |m: &Vec<f64>| {
        let total: f64 = m.iter().sum();
        m.iter()
            .map(|&c| {
                if total > 0.0 {
                    c / total
                } else {
                    1.0 / m.len() as f64
                }
            })
            .collect::<Vec<f64>>()
    };
    let p: Vec<Vec<f64>> = one.iter().map(probability).collect();
    // Score: the L1 distance of the raw 2-way counts from the independence
    // model of the noisy 1-way marginals (rounded: a fixed integer table).
    // The pairs the model gets most wrong are worth measuring.
    let score = |&(i, j): &(usize, usize)| -> i64 {
        let counts = &raw.two[&(i, j)];
        let mut l1: i64 = 0;
        for a in 0..raw.sizes[i] {
            for b in 0..raw.sizes[j] {
                let model = (rows * p[i][a] * p[j][b]).round() as i64;
                l1 = l1.saturating_add(
                    counts[a * raw.sizes[j] + b]
                        .saturating_sub(model)
                        .saturating_abs(),
                );
            }
        }
        l1
    };
    let mut component: Vec<usize> = (0..d).collect();
    let mut edges = Vec::with_capacity(d - 1);
    while edges.len() + 1 < d {
        let candidates: Vec<(usize, usize)> = (0..d)
            .flat_map(|i| (i + 1..d).map(move |j| (i, j)))
            .filter(|&(i, j)| component[i] != component[j])
            .collect();
        let scores: Vec<i64> = candidates.iter().map(score).collect();
        let pick = select
            .select(&scores, rng)
            .expect("candidates remain while the tree is incomplete");
        let (i, j) = candidates[pick];
        let (from, to) = (component[j], component[i]);
        for c in component.iter_mut() {
            if *c == from {
                *c = to;
            }
        }
        edges.push((i, j));
    }
    edges
}

/// Consistent, nonnegative probabilities from the noisy tables: each
/// attribute's marginal is the inverse-variance weighted mean of its own
/// measurement and the sums of its edges' tables; each edge's table is
/// then fitted to its two attributes' marginals by iterative proportional
/// fitting. Post-processing of noisy values only.
fn estimate(
    sizes: &[usize],
    edges: &[(usize, usize)],
    noisy_one: &[Vec<i64>],
    noisy_two: &[Vec<i64>],
    shares: &Shares,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, f64) {
    let var_one = shares.one.sigma2().to_f64();
    let var_two = shares
        .two
        .as_ref()
        .map_or(f64::INFINITY, |g| g.sigma2().to_f64());
    let mut sum: Vec<Vec<f64>> = noisy_one
        .iter()
        .map(|m| m.iter().map(|&c| c as f64 / var_one).collect())
        .collect();
    let mut weight: Vec<f64> = vec![1.0 / var_one; sizes.len()];
    for (e, &(i, j)) in edges.iter().enumerate() {
        let t = &noisy_two[e];
        // A row sum of the table adds sizes[j] noises: variance × sizes[j].
        let (wi, wj) = (
            1.0 / (var_two * sizes[j] as f64),
            1.0 / (var_two * sizes[i] as f64),
        );
        for a in 0..sizes[i] {
            for b in 0..sizes[j] {
                let c = t[a * sizes[j] + b] as f64;
                sum[i][a] += c * wi;
                sum[j][b] += c * wj;
            }
        }
        weight[i] += wi;
        weight[j] += wj;
    }
    let counts: Vec<Vec<f64>> = sum
        .iter()
        .zip(&weight)
        .map(|(s, w)| s.iter().map(|x| (x / w).max(0.0)).collect())
        .collect();
    let rows = counts.iter().map(|m| m.iter().sum::<f64>()).sum::<f64>() / sizes.len() as f64;
    let one: Vec<Vec<f64>> = counts.iter().map(|m| normalize(m)).collect();
    let two: Vec<Vec<f64>> = edges
        .iter()
        .enumerate()
        .map(|(e, &(i, j))| {
            let start: Vec<f64> = noisy_two[e].iter().map(|&c| c.max(0) as f64).collect();
            fit_table(start, &one[i], &one[j])
        })
        .collect();
    (one, two, rows.max(0.0))
}

fn normalize(m: &[f64]) -> Vec<f64> {
    let total: f64 = m.iter().sum();
    if total > 0.0 {
        m.iter().map(|c| c / total).collect()
    } else {
        vec![1.0 / m.len() as f64; m.len()]
    }
}

/// Iterative proportional fitting of a nonnegative table to row and
/// column marginals (a small floor keeps empty rows fittable). A row or
/// column whose target is zero is emptied, and one whose cells are all
/// zero while its target is not is spread evenly, so no step divides by
/// zero (0/0 would turn the whole table into NaN).
fn fit_table(mut t: Vec<f64>, rows: &[f64], cols: &[f64]) -> Vec<f64> {
    let m = cols.len();
    let floor = 1e-9;
    for x in t.iter_mut() {
        *x = x.max(floor);
    }
    for _ in 0..50 {
        for (row, &target) in t.chunks_mut(m).zip(rows) {
            scale(&mut row.iter_mut().collect::<Vec<_>>(), target);
        }
        for (b, &target) in cols.iter().enumerate() {
            scale(
                &mut t.iter_mut().skip(b).step_by(m).collect::<Vec<_>>(),
                target,
            );
        }
    }
    normalize(&t)
}

/// Scales `cells` to sum to `target` (evenly spread when they sum to 0).
fn scale(cells: &mut [&mut f64], target: f64) {
    let len = cells.len().max(1) as f64;
    let s: f64 = cells.iter().map(|x| **x).sum();
    for x in cells.iter_mut() {
        **x = if s > 0.0 {
            **x * (target / s)
        } else {
            target / len
        };
    }
}

impl Fit {
    /// `n` rows sampled from the tree model, root (attribute 0) to leaf:
    /// each attribute given its parent's value. Post-processing.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<Vec<usize>> {
        let d = self.sizes.len();
        // Breadth-first order from attribute 0, each with its parent edge.
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; d];
        let mut order = vec![0];
        let mut seen = vec![false; d];
        seen[0] = true;
        let mut next = 0;
        while next < order.len() {
            let v = order[next];
            next += 1;
            for (e, &(i, j)) in self.edges.iter().enumerate() {
                let other = if i == v {
                    j
                } else if j == v {
                    i
                } else {
                    continue;
                };
                if !seen[other] {
                    seen[other] = true;
                    parent[other] = Some((v, e));
                    order.push(other);
                }
            }
        }
        // Attributes outside the tree (d = 1, or none chosen) sample alone.
        for (v, s) in seen.iter().enumerate() {
            if !s {
                order.push(v);
            }
        }
        (0..n)
            .map(|_| {
                let mut row = vec![0usize; d];
                for &v in &order {
                    row[v] = match parent[v] {
                        None => draw(&self.one[v], rng),
                        Some((p, e)) => {
                            let (i, j) = self.edges[e];
                            let t = &self.two[e];
                            let conditional: Vec<f64> = if p == i {
                                (0..self.sizes[j])
                                    .map(|b| t[row[p] * self.sizes[j] + b])
                                    .collect()
                            } else {
                                (0..self.sizes[i])
                                    .map(|a| t[a * self.sizes[j] + row[p]])
                                    .collect()
                            };
                            if conditional.iter().sum::<f64>() > 0.0 {
                                draw(&conditional, rng)
                            } else {
                                draw(&self.one[v], rng)
                            }
                        }
                    };
                }
                row
            })
            .collect()
    }
}

/// An index drawn with probability proportional to `weights`.
fn draw<R: Rng + ?Sized>(weights: &[f64], rng: &mut R) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// The ρ a fit at budget `rho` spends on `d` attributes with `k` rows per
/// unit (exact; at most `rho`), without fitting.
pub fn cost(rho: &Rational, d: usize, k: u64) -> Result<Rational, FitError> {
    if d == 0 {
        return Err(FitError::Shape("no attributes".into()));
    }
    Ok(Shares::new(rho, d, k)?.rho(d))
}

/// Total variation distance between two distributions on the same cells.
pub fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(q)
        .map(|(a, b)| (a / sp.max(f64::MIN_POSITIVE) - b / sq.max(f64::MIN_POSITIVE)).abs())
        .sum::<f64>()
        / 2.0
}

#[cfg(test)]
mod tests;
