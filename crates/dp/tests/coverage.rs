//! Reported 95 % intervals cover the clamped truth in at least 94 % of
//! the trials, for every mechanism's output.

use dpgate_dp::release::{histogram_quantile, Measurement, Output, ReleasePlan};
use dpgate_dp::sensitivity::Contribution;
use dpgate_dp::{secure_rng, DiscreteGaussian, DiscreteLaplace, Grid, Noise, Rational};

// More than the 2 000 asked for, so a correct 95 % interval cannot fall
// under 94 % by chance (4.5 standard deviations).
const TRIALS: usize = 10_000;

fn laplace(sens: u64, eps: f64) -> Noise {
    DiscreteLaplace::new(sens, Rational::from_f64(eps).unwrap())
        .unwrap()
        .into()
}

/// Fraction of trials whose interval holds `truth`.
fn coverage(plan: &ReleasePlan, raw: &[i64], truth: f64) -> f64 {
    let mut rng = secure_rng();
    let hits = (0..TRIALS)
        .filter(|_| {
            let out = &plan.release(raw, 0.95, &mut rng)[0];
            (out.value.as_f64() - truth).abs() <= out.half_width + 1e-9
        })
        .count();
    hits as f64 / TRIALS as f64
}

fn assert_covers(name: &str, plan: &ReleasePlan, raw: &[i64], truth: f64) {
    let c = coverage(plan, raw, truth);
    eprintln!("coverage {name}: {:.1} %", c * 100.0);
    assert!(c >= 0.94, "{name}: {c}");
}

#[test]
fn counts_and_sums() {
    let plan = ReleasePlan {
        selection: None,
        measurements: vec![Measurement::scalar(laplace(5, 0.1), Grid::INTEGER)],
        outputs: vec![Output::Count { measurement: 0 }],
        zcdp: None,
    };
    assert_covers("count", &plan, &[10_000], 10_000.0);

    let grid = Grid::for_magnitude(5000.0);
    let sens = Contribution::ungrouped(5).sum(grid.max_units(0.0, 5000.0));
    let plan = ReleasePlan {
        selection: None,
        measurements: vec![Measurement::scalar(laplace(sens.l1, 0.5), grid)],
        outputs: vec![Output::Sum {
            measurement: 0,
            integer: false,
            lower: 0.0,
            upper: 5000.0,
        }],
        zcdp: None,
    };
    let truth_units = 123_456_789i64;
    assert_covers(
        "real sum",
        &plan,
        &[truth_units],
        truth_units as f64 * grid.unit(),
    );

    let g: Noise = DiscreteGaussian::new(25, Rational::from_f64(0.05).unwrap())
        .unwrap()
        .into();
    let plan = ReleasePlan {
        selection: None,
        measurements: vec![Measurement::scalar(g, Grid::INTEGER)],
        outputs: vec![Output::Count { measurement: 0 }],
        zcdp: None,
    };
    assert_covers("gaussian count", &plan, &[5_000], 5_000.0);
}

#[test]
fn means_variances_and_deviations() {
    // 2 000 values: half at 20, half at 60, in [0, 100]: mean 40, variance 400.
    let n = 2_000i64;
    let c = Contribution::ungrouped(1);
    let plan = ReleasePlan {
        selection: None,
        measurements: vec![
            Measurement::scalar(laplace(c.sum(100).l1, 0.5), Grid::INTEGER),
            Measurement::scalar(laplace(c.count().l1, 0.5), Grid::INTEGER),
        ],
        outputs: vec![Output::Mean {
            sum: 0,
            count: 1,
            lower: 0.0,
            upper: 100.0,
            center: 0.0,
        }],
        zcdp: None,
    };
    assert_covers("mean", &plan, &[n / 2 * 20 + n / 2 * 60, n], 40.0);
    // The same mean from values centred at 50 (sensitivity halved).
    let centred = ReleasePlan {
        measurements: vec![
            Measurement::scalar(laplace(c.sum(50).l1, 0.5), Grid::INTEGER),
            Measurement::scalar(laplace(c.count().l1, 0.5), Grid::INTEGER),
        ],
        outputs: vec![Output::Mean {
            sum: 0,
            count: 1,
            lower: 0.0,
            upper: 100.0,
            center: 50.0,
        }],
        ..plan.clone()
    };
    assert_covers(
        "centred mean",
        &centred,
        &[n / 2 * -30 + n / 2 * 10, n],
        40.0,
    );

    // Centred at 50 with radius 50: values -30 and +10.
    let (cnt, sum, sq) = (n, n / 2 * -30 + n / 2 * 10, n / 2 * 900 + n / 2 * 100);
    let sample_var = 400.0 * n as f64 / (n - 1) as f64;
    for (name, stddev, sample, truth) in [
        ("variance", false, false, 400.0),
        ("stddev", true, false, 20.0),
        ("sample variance", false, true, sample_var),
    ] {
        let plan = ReleasePlan {
            selection: None,
            measurements: vec![
                Measurement::scalar(laplace(c.count().l1, 1.0 / 3.0), Grid::INTEGER),
                Measurement::scalar(laplace(c.sum(50).l1, 1.0 / 3.0), Grid::INTEGER),
                Measurement::scalar(laplace(c.sum(2500).l1, 1.0 / 3.0), Grid::INTEGER),
            ],
            outputs: vec![Output::Variance {
                count: 0,
                sum: 1,
                sum_squares: 2,
                radius: 50.0,
                sample,
                stddev,
            }],
            zcdp: None,
        };
        assert_covers(name, &plan, &[cnt, sum, sq], truth);
    }
}

#[test]
fn quantiles() {
    // About 10 000 values over [0, 100] in 50 bins, unevenly spread.
    let bins = 50usize;
    let counts: Vec<i64> = (0..bins).map(|i| 20 + (i as i64 * 7) % 400).collect();
    let as_f64: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    for p in [0.1, 0.5, 0.9] {
        let plan = ReleasePlan {
            selection: None,
            measurements: vec![Measurement {
                noise: laplace(Contribution::ungrouped(2).histogram().l1, 0.5),
                grid: Grid::INTEGER,
                len: bins,
            }],
            outputs: vec![Output::Quantile {
                histogram: 0,
                lower: 0.0,
                upper: 100.0,
                p,
            }],
            zcdp: None,
        };
        let truth = histogram_quantile(&as_f64, 0.0, 100.0, p);
        assert_covers(&format!("quantile {p}"), &plan, &counts, truth);
    }
}
