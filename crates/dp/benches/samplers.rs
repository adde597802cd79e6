//! Samples per second of each exact sampler, at small and large scales.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dpgate_dp::samplers::{sample_discrete_gaussian, sample_discrete_laplace};
use dpgate_dp::{secure_rng, Rational};

fn samplers(c: &mut Criterion) {
    let mut group = c.benchmark_group("sampler");
    group.throughput(Throughput::Elements(1));
    let mut rng = secure_rng();
    for scale in [1.0, 100.0, 1e4, 1e7] {
        let b = Rational::from_f64(scale).unwrap();
        group.bench_with_input(
            BenchmarkId::new("discrete_laplace", scale),
            &b,
            |bench, b| bench.iter(|| sample_discrete_laplace(b, &mut rng)),
        );
        let s2 = Rational::from_f64(scale * scale).unwrap();
        group.bench_with_input(
            BenchmarkId::new("discrete_gaussian", scale),
            &s2,
            |bench, s2| bench.iter(|| sample_discrete_gaussian(s2, &mut rng)),
        );
    }
    // A realistic scale: Δ = 5 at ε = 0.1/3, an exact non-dyadic rational.
    let b = Rational::integer(5)
        .div(&Rational::from_f64(0.1 / 3.0).unwrap())
        .unwrap();
    group.bench_function("discrete_laplace/count_eps_0.033", |bench| {
        bench.iter(|| sample_discrete_laplace(&b, &mut rng))
    });
    group.finish();
}

criterion_group!(benches, samplers);
criterion_main!(benches);
