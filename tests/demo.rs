//! `dpgate demo`: generates the hospital, loads it into embedded SQLite,
//! serves it, and the psql command it prints answers the README's first
//! query with noisy rows and a NOTICE. No PostgreSQL server is involved.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The connection string of the `psql "…"` line dpgate printed.
fn printed_psql_target(gate: &Dpgate) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gate.log.lock().unwrap().clone();
        if let Some(line) = log.lines().find(|l| l.trim_start().starts_with("psql \"")) {
            return line
                .trim()
                .trim_start_matches("psql ")
                .trim_matches('"')
                .to_string();
        }
        assert!(Instant::now() < deadline, "no psql line printed:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_demo_starts_and_answers_the_readme_query() {
    let dir = tempdir();
    let (port, http_port) = (free_port(), free_port());
    let demo_dir = dir.path().join("demo");
    let listen = format!("127.0.0.1:{port}");
    let http_listen = format!("127.0.0.1:{http_port}");
    let started = Instant::now();
    let gate = Dpgate::run(
        dir.path(),
        &[
            "demo",
            "--dir",
            demo_dir.to_str().unwrap(),
            "--listen",
            &listen,
            "--http-listen",
            &http_listen,
        ],
        port,
    );
    println!(
        "demo listening after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let target = printed_psql_target(&gate);
    assert!(target.ends_with(&format!("@{listen}/demo")), "{target}");

    let (stdout, stderr) = psql(
        &target,
        &[
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward",
        ],
    );
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('|').collect()).collect();
    let wards: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        wards,
        [
            "cardiology",
            "emergency",
            "maternity",
            "oncology",
            "orthopedics",
            "pediatrics"
        ],
        "{stdout}"
    );
    let mut total = 0;
    for r in &rows {
        total += r[1].parse::<i64>().unwrap();
        assert!(r[2].parse::<f64>().is_ok(), "{r:?}");
    }
    // 100 000 visits (at most 10 per patient, as declared); the
    // six noises (Laplace, scale 300) sum to about ±1 000.
    assert!((80_000..=110_000).contains(&total), "{total}: {stdout}");
    assert!(
        stderr.contains("NOTICE:  dpgate: this answer cost ε = 0.1"),
        "{stderr}"
    );

    // The printed curl line works as printed: HTTP Basic against the
    // demo user's stored SCRAM verifier.
    let log = gate.log.lock().unwrap().clone();
    let curl = log
        .lines()
        .find(|l| l.trim_start().starts_with("curl "))
        .unwrap_or_else(|| panic!("no curl line printed:\n{log}"));
    assert!(curl.contains(&http_listen), "{curl}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(curl.trim())
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(answer["rows"].as_array().map(Vec::len), Some(6), "{answer}");
    assert_eq!(answer["cost"]["epsilon"], 0.1, "{answer}");

    // psql's meta-commands browse the demo's tables through dpgate's own
    // catalog cluster, although the data is in SQLite.
    let (stdout, _) = psql(&target, &["-X", "-c", "\\dt", "-c", "\\d visits"]);
    assert!(
        stdout.contains("visits") && stdout.contains("patients"),
        "{stdout}"
    );
    assert!(stdout.contains("Table \"public.visits\""), "{stdout}");
    assert!(stdout.contains("ward"), "{stdout}");

    // A look at the rows: synthetic, fitted once at ε = 1 from the
    // dataset budget, with the NOTICE that says so.
    wait_for_synthetic(|| {
        let out = Command::new("psql")
            .arg(&target)
            .args(["-X", "-c", "SELECT * FROM visits LIMIT 1"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    let (stdout, stderr) = psql(&target, &["-X", "-c", "SELECT * FROM visits LIMIT 10"]);
    assert!(stdout.contains("(10 rows)"), "{stdout}");
    assert!(stderr.contains("these rows are synthetic"), "{stderr}");
    // The data owner's check of the fit against the real table: mean
    // total variation of the 1-way marginals and of the tree's 2-way ones.
    let report = dir.path().join("synthetic.html");
    let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args([
            "synth",
            "--table",
            "visits",
            "--rows",
            "100000",
            "--compare-real",
        ])
        .arg("--config")
        .arg(demo_dir.join("proxy.toml"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = printed
        .lines()
        .find(|l| l.contains("synthetic vs real"))
        .unwrap_or_else(|| panic!("{printed}"));
    let means: Vec<f64> = real
        .split("mean ")
        .skip(1)
        .map(|t| {
            t.split(|c: char| c == ';' || c.is_whitespace())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    println!("{real}");
    assert!(means[0] <= 0.05 && means[1] <= 0.10, "{real}");
    assert!(std::fs::read_to_string(&report).unwrap().contains("<svg"));

    // The generated files and the loaded database are where the config says.
    for file in [
        "proxy.toml",
        "data/visits.csv",
        "data/patients.csv",
        "demo.db",
    ] {
        assert!(demo_dir.join(file).exists(), "{file}");
    }
    let visits = std::fs::read_to_string(demo_dir.join("data/visits.csv")).unwrap();
    assert_eq!(visits.lines().count(), 100_001);

    // The data holds what proxy.toml declares, and the demo's 30-query
    // workload (written beside it, as the banner says) passes every test
    // of `dpgate evaluate`, while the demo serves.
    let verify = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["check", "--verify", "--config"])
        .arg(demo_dir.join("proxy.toml"))
        .output()
        .unwrap();
    let verify = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.contains("at most 10 rows per unit (declared 10)") && !verify.contains("more than"),
        "{verify}"
    );
    let json = dir.path().join("evaluate.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["evaluate", "--config"])
        .arg(demo_dir.join("proxy.toml"))
        .arg("--queries")
        .arg(demo_dir.join("workload.sql"))
        // α = 1e-6: a correct build fails about once in 3 million runs
        // (at 0.001, once in 3 000), and any ε it could still find is
        // above the demo's largest, 1.
        .args(["--trials", "300", "--alpha", "0.000001", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["queries"].as_array().unwrap().len(), 30);
}

/// Runs psql against `target`; its stdout and stderr, once it succeeded.
fn psql(target: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("psql")
        .arg(target)
        .args(args)
        .output()
        .expect("psql on PATH");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}
