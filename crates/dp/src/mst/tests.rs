use std::collections::BTreeMap;

use super::*;
use crate::secure_rng;

/// Raw marginals of `rows` (each row a value per attribute).
fn marginals(sizes: &[usize], rows: &[Vec<usize>]) -> RawMarginals {
    let d = sizes.len();
    let mut one: Vec<Vec<i64>> = sizes.iter().map(|&s| vec![0; s]).collect();
    let mut two = BTreeMap::new();
    for i in 0..d {
        for j in i + 1..d {
            two.insert((i, j), vec![0i64; sizes[i] * sizes[j]]);
        }
    }
    for r in rows {
        for i in 0..d {
            one[i][r[i]] += 1;
            for j in i + 1..d {
                two.get_mut(&(i, j)).unwrap()[r[i] * sizes[j] + r[j]] += 1;
            }
        }
    }
    RawMarginals {
        sizes: sizes.to_vec(),
        one,
        two,
    }
}

fn distribution(counts: &[i64]) -> Vec<f64> {
    counts.iter().map(|&c| c as f64).collect()
}

/// A table where b follows a and d follows c, and c is independent of a.
fn table(n: usize) -> (Vec<usize>, Vec<Vec<usize>>) {
    let sizes = vec![5, 5, 6, 3];
    let mut rng = secure_rng();
    let rows = (0..n)
        .map(|_| {
            let a = rng.gen_range(0..5usize).min(rng.gen_range(0..5));
            let b = if rng.gen_bool(0.8) {
                a
            } else {
                rng.gen_range(0..5)
            };
            let c = rng.gen_range(0..6);
            let d = if rng.gen_bool(0.9) {
                c % 3
            } else {
                rng.gen_range(0..3)
            };
            vec![a, b, c, d]
        })
        .collect();
    (sizes, rows)
}

#[test]
fn synthetic_rows_keep_the_marginals_and_the_strong_pairs() {
    let (sizes, rows) = table(20_000);
    let raw = marginals(&sizes, &rows);
    let rho = Rational::from_f64(0.5).unwrap();
    let fit = fit(&raw, &rho, 1, &mut secure_rng()).unwrap();
    assert!(
        fit.rho <= rho,
        "spent {} of {}",
        fit.rho.to_f64(),
        rho.to_f64()
    );
    assert_eq!(fit.edges.len(), 3);
    // The dependent pairs are in the tree.
    assert!(fit.edges.contains(&(0, 1)), "{:?}", fit.edges);
    assert!(fit.edges.contains(&(2, 3)), "{:?}", fit.edges);
    let synthetic = fit.sample(20_000, &mut secure_rng());
    let fake = marginals(&sizes, &synthetic);
    for i in 0..sizes.len() {
        let tv = total_variation(&distribution(&raw.one[i]), &distribution(&fake.one[i]));
        assert!(tv < 0.05, "attribute {i}: TV {tv}");
    }
    for e in &fit.edges {
        let tv = total_variation(&distribution(&raw.two[e]), &distribution(&fake.two[e]));
        assert!(tv < 0.10, "edge {e:?}: TV {tv}");
    }
    assert!((fit.rows - 20_000.0).abs() < 500.0, "{}", fit.rows);
}

#[test]
fn the_cost_is_exact_and_within_the_budget() {
    for (d, k) in [(1usize, 1u64), (2, 1), (7, 5), (30, 10)] {
        let rho = Rational::from_f64(0.3).unwrap();
        let spent = cost(&rho, d, k).unwrap();
        assert!(spent <= rho, "d {d}: {}", spent.to_f64());
        assert!(
            spent.to_f64() > 0.999 * rho.to_f64(),
            "d {d}: the budget is used: {}",
            spent.to_f64()
        );
    }
    let (sizes, rows) = table(100);
    let raw = marginals(&sizes, &rows);
    let rho = Rational::from_f64(0.3).unwrap();
    assert_eq!(
        fit(&raw, &rho, 2, &mut secure_rng()).unwrap().rho,
        cost(&rho, 4, 2).unwrap()
    );
}

#[test]
fn one_attribute_and_bad_shapes() {
    let raw = marginals(&[3], &[vec![0], vec![2], vec![2]]);
    let f = fit(&raw, &Rational::integer(1), 1, &mut secure_rng()).unwrap();
    assert!(f.edges.is_empty());
    assert_eq!(f.sample(5, &mut secure_rng()).len(), 5);
    let mut broken = marginals(&[2, 2], &[vec![0, 1]]);
    broken.two.clear();
    assert!(matches!(
        fit(&broken, &Rational::integer(1), 1, &mut secure_rng()),
        Err(FitError::Shape(_))
    ));
}

/// A value whose estimated probability is zero (all its noisy counts
/// negative) must not poison its edge's table: the fitted table keeps
/// both marginals and holds no NaN (a 0/0 once made it uniform).
#[test]
fn a_zero_marginal_keeps_the_edge_table_fitted() {
    let rows = [0.5, 0.0, 0.5];
    let cols = [0.9, 0.1];
    let start = vec![40.0, 5.0, 0.0, 0.0, 45.0, 5.0];
    let t = fit_table(start, &rows, &cols);
    assert!(t.iter().all(|x| x.is_finite()), "{t:?}");
    assert!(t[2] + t[3] < 1e-6, "{t:?}");
    let col0 = t[0] + t[2] + t[4];
    assert!((col0 - 0.9).abs() < 1e-6, "{t:?}");
    assert!((t[0] + t[1] - 0.5).abs() < 1e-6, "{t:?}");
    // A row with a positive target but no mass gets spread evenly.
    let t = fit_table(vec![0.0, 0.0, 3.0, 1.0], &[0.5, 0.5], &[0.5, 0.5]);
    assert!(t.iter().all(|x| x.is_finite() && *x > 0.0), "{t:?}");
}
