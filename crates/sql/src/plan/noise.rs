//! The noise of a plan: discrete Laplace under pure ε, or discrete
//! Gaussian under zCDP charged as the (ε, δ) it implies, whichever gives
//! the outputs less variance at the same charge (or the one the session
//! asks for), and the partition selection that goes with it.

use dpgate_dp::accounting::zcdp_for;
use dpgate_dp::partition::PartitionSelection;
use dpgate_dp::release::{KeySelection, Measurement, Output, ZcdpCharge};
use dpgate_dp::sensitivity::Sensitivity;
use dpgate_dp::{DiscreteGaussian, DiscreteLaplace, Rational};

use super::split::{shares as shares_by, Mechanism, Split};
use super::{beyond_limits, MechanismNote};
use crate::aggregate::MeasureSpec;
use crate::error::{sqlstate, Refusal};

/// Measurements, their key selection and the zCDP charge of one mechanism.
pub(super) struct Noised {
    pub measurements: Vec<Measurement>,
    pub selection: Option<KeySelection>,
    pub zcdp: Option<ZcdpCharge>,
}

/// What the plan's noise needs to know besides the measurements.
pub(super) struct NoiseInput<'a> {
    pub specs: &'a [MeasureSpec],
    pub outputs: &'a [Output],
    /// The count that decides partition selection, if keys need it.
    pub selection_count: Option<usize>,
    /// Rows one unit may contribute.
    pub max_rows: u64,
    /// The query's δ (`privacy.delta`).
    pub delta: f64,
    pub split: Split,
}

/// The noise for `input` at `epsilon`: Laplace, Gaussian, or the better of
/// the two by [`relative_variance`], as `mechanism` says.
pub(super) fn noise(
    input: &NoiseInput<'_>,
    epsilon: &Rational,
    mechanism: Mechanism,
) -> Result<(Noised, MechanismNote), Refusal> {
    let laplace = laplace(input, epsilon)?;
    let gaussian = match mechanism {
        Mechanism::Laplace => None,
        _ => gaussian(input, epsilon)?,
    };
    let ratio = gaussian
        .as_ref()
        .map(|g| relative_variance(input.outputs, input.selection_count, &laplace, g));
    let use_gaussian = match (mechanism, ratio) {
        (Mechanism::Gaussian, Some(_)) => true,
        (Mechanism::Gaussian, None) => return Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "Gaussian noise cannot be calibrated for this query: its sensitivity is beyond the Gaussian sampler's range, or privacy.delta leaves no δ for it",
            "SET dp.mechanism = 'laplace' (or 'auto'), or narrow the aggregated expression's bounds",
        )),
        (Mechanism::Auto, Some(r)) => r < 1.0,
        _ => false,
    };
    let note = MechanismNote {
        gaussian: use_gaussian,
        gaussian_variance_ratio: ratio,
        chosen_by: mechanism,
    };
    Ok(match gaussian {
        Some(g) if use_gaussian => (g, note),
        _ => (laplace, note),
    })
}

/// Discrete Laplace noise at ε shares (exact rationals adding up to ε),
/// the selection count noised by Laplace thresholding at its share.
fn laplace(input: &NoiseInput<'_>, epsilon: &Rational) -> Result<Noised, Refusal> {
    let shares = shares(epsilon, input, 1.0 / 3.0);
    let mut measurements: Vec<Measurement> = input
        .specs
        .iter()
        .zip(&shares)
        .map(|(s, share)| {
            Ok(Measurement {
                noise: DiscreteLaplace::new(s.sensitivity, share.clone())
                    .map_err(beyond_limits)?
                    .into(),
                grid: s.grid,
                len: s.sqls.len(),
            })
        })
        .collect::<Result<_, Refusal>>()?;
    let selection = match input.selection_count {
        Some(count) => {
            let k = input.max_rows;
            let sens = Sensitivity {
                l_inf: k,
                l1: k,
                l2_squared: k.saturating_mul(k),
            };
            let selection =
                PartitionSelection::laplace_for(sens, k, shares[count].clone(), input.delta)
                    .map_err(beyond_limits)?;
            // The deciding count is noised by the selection's own mechanism.
            measurements[count].noise = selection.noise().clone();
            Some(KeySelection { count, selection })
        }
        None => None,
    };
    Ok(Noised {
        measurements,
        selection,
        zcdp: None,
    })
}

/// Discrete Gaussian noise at ρ shares, where ρ is the most the query's
/// (ε, δ_g) charge covers ([`zcdp_for`]); with partition selection, δ is
/// halved between the keys and the conversion, so the query's δ stays
/// `privacy.delta`. Each measurement's squared L2 sensitivity is its L1
/// sensitivity squared: one unit's rows may all land in one coordinate
/// (one group, one bin), so no shape here does better. `None` without δ.
fn gaussian(input: &NoiseInput<'_>, epsilon: &Rational) -> Result<Option<Noised>, Refusal> {
    if !(input.delta > 0.0 && input.delta < 1.0) {
        return Ok(None);
    }
    let (conversion_delta, selection_delta) = match input.selection_count {
        Some(_) => (input.delta / 2.0, input.delta / 2.0),
        None => (input.delta, 0.0),
    };
    let Some(rho) = zcdp_for(epsilon, conversion_delta) else {
        return Ok(None);
    };
    let shares = shares(&rho, input, 1.0 / 2.0);
    let mut measurements: Vec<Measurement> = Vec::with_capacity(input.specs.len());
    for (s, share) in input.specs.iter().zip(&shares) {
        // L2² = L1² exactly; one that does not fit u64 is beyond the
        // samplers (never saturated, which would under-calibrate).
        let Some(l2_squared) = s.sensitivity.checked_mul(s.sensitivity) else {
            return Ok(None);
        };
        let noise = match DiscreteGaussian::new(l2_squared, share.clone()) {
            Ok(g) => g,
            // Beyond the samplers' range: Laplace will do.
            Err(_) => return Ok(None),
        };
        measurements.push(Measurement {
            noise: noise.into(),
            grid: s.grid,
            len: s.sqls.len(),
        });
    }
    let selection = match input.selection_count {
        Some(count) => {
            // As for Laplace: a unit's k rows may reach k keys (L0 = k),
            // each of which it alone may hold, and its count changes by at
            // most k in one key (L∞ = L1 = k, L2² = k²).
            let k = input.max_rows;
            let Some(k2) = k.checked_mul(k) else {
                return Ok(None);
            };
            let sens = Sensitivity {
                l_inf: k,
                l1: k,
                l2_squared: k2,
            };
            let Ok(selection) =
                PartitionSelection::gaussian_for(sens, k, shares[count].clone(), selection_delta)
            else {
                return Ok(None);
            };
            measurements[count].noise = selection.noise().clone();
            Some(KeySelection { count, selection })
        }
        None => None,
    };
    Ok(Some(Noised {
        measurements,
        selection,
        zcdp: Some(ZcdpCharge {
            rho,
            epsilon: epsilon.clone(),
            delta: conversion_delta,
        }),
    }))
}

/// Each measurement's share of `total` (ε or ρ) by the session's rule;
/// `power` is 1/3 for ε and 1/2 for ρ (see [`dpgate_dp::split`]).
fn shares(total: &Rational, input: &NoiseInput<'_>, power: f64) -> Vec<Rational> {
    shares_by(
        total,
        input.specs,
        input.outputs,
        input.selection_count,
        input.split,
        power,
    )
}

/// The outputs' variance under `gaussian` relative to `laplace`, averaged
/// over the outputs (the deciding count counts as one when keys are
/// selected, or alone when nothing else is measured): below 1, Gaussian
/// noise answers more accurately at the same charge. Each output's
/// variance is Σᵢ aᵢ·Var(noiseᵢ)·unitᵢ² with the weights of
/// [`Output::sensitivity_weights`], so the common factors cancel.
pub(super) fn relative_variance(
    outputs: &[Output],
    selection_count: Option<usize>,
    laplace: &Noised,
    gaussian: &Noised,
) -> f64 {
    let variance = |n: &Noised, parts: &[(usize, f64)]| -> f64 {
        parts
            .iter()
            .map(|&(i, a)| {
                let m = &n.measurements[i];
                a * m.noise.variance() * m.grid.unit() * m.grid.unit()
            })
            .sum()
    };
    let mut ratios: Vec<f64> = outputs
        .iter()
        .map(|o| {
            let parts = o.sensitivity_weights();
            variance(gaussian, &parts) / variance(laplace, &parts)
        })
        .collect();
    if let Some(count) = selection_count.or((outputs.is_empty()).then_some(0)) {
        let parts = [(count, 1.0)];
        ratios.push(variance(gaussian, &parts) / variance(laplace, &parts));
    }
    let finite: Vec<f64> = ratios.into_iter().filter(|r| r.is_finite()).collect();
    if finite.is_empty() {
        return f64::INFINITY;
    }
    finite.iter().sum::<f64>() / finite.len() as f64
}
