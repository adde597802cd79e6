//! Does the time of a draw reveal its value? Times many single draws,
//! groups them by |value| into deciles, and prints the mean time per decile
//! and the ratio of the slowest decile to the fastest:
//!
//! - "sampler": drawing the noise (what happens off the request path);
//! - "request path": adding already-drawn noise and post-processing, what
//!   the server does after the backend answers.
//!
//! A ratio near 1.0 means the time carries no information about the noise.
//! Run: `cargo bench -p dpgate-dp --bench timing`.

use std::hint::black_box;
use std::time::Instant;

use dpgate_dp::release::{Measurement, Output, ReleasePlan};
use dpgate_dp::{secure_rng, DiscreteLaplace, Grid, Rational};

const DRAWS: usize = 200_000;

fn report(name: &str, mut samples: Vec<(u128, f64)>) {
    samples.sort_by_key(|s| s.0);
    let deciles: Vec<f64> = samples
        .chunks(samples.len() / 10)
        .take(10)
        .map(|c| c.iter().map(|s| s.1).sum::<f64>() / c.len() as f64)
        .collect();
    let (lo, hi) = deciles
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    let shown: Vec<String> = deciles.iter().map(|d| format!("{d:.0}")).collect();
    println!(
        "{name:<34} ns per decile of |noise|: [{}]  slowest/fastest = {:.2}",
        shown.join(", "),
        hi / lo
    );
}

fn main() {
    let mut rng = secure_rng();
    for scale in [10.0, 1e4] {
        let m = DiscreteLaplace::new(1, Rational::from_f64(1.0 / scale).unwrap()).unwrap();
        let plan = ReleasePlan {
            selection: None,
            measurements: vec![Measurement::scalar(m.clone(), Grid::INTEGER)],
            outputs: vec![Output::Count { measurement: 0 }],
            zcdp: None,
        };
        let mut sampler = Vec::with_capacity(DRAWS);
        let mut request = Vec::with_capacity(DRAWS);
        for _ in 0..DRAWS {
            let start = Instant::now();
            let draw = plan.draw_noise(&mut rng);
            let t_draw = start.elapsed().as_nanos() as f64;
            let start = Instant::now();
            let noisy = plan.add_noise(black_box(&[1000]), &draw);
            let out = plan.derive_all(&noisy, 0.95);
            let t_req = start.elapsed().as_nanos() as f64;
            let magnitude = (noisy[0][0] - 1000).unsigned_abs();
            black_box(out);
            sampler.push((magnitude, t_draw));
            request.push((magnitude, t_req));
        }
        report(&format!("sampler, scale {scale}"), sampler);
        report(&format!("request path, scale {scale}"), request);
    }
}
