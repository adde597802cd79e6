//! The HTTP/JSON front end against a real dpgate and PostgreSQL: curl and
//! Python `requests` as clients, one budget shared with the wire protocol,
//! errors as JSON with SQLSTATEs, limits, and a generator of malformed
//! requests that must change nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::http::{basic, query, request, send_and_close, send_raw};
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "http-test-token-0123456789";
const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// proxy.toml with `[http]` on `http_port` (and `extra` appended).
fn http_toml(
    db: &str,
    port: u16,
    http_port: u16,
    dir: &std::path::Path,
    budget: f64,
    extra: &str,
) -> String {
    proxy_toml(db, port, &dir.join("l.sqlite"), budget, 0.1)
        .replace(
            "[backend]",
            &format!("[http]\nlisten = \"127.0.0.1:{http_port}\"\nmetrics_token = \"env:DPGATE_TEST_METRICS_TOKEN\"\n{extra}\n[backend]"),
        )
        .replace(
            "password = \"env:DPGATE_TEST_PASSWORD\"",
            "password = \"env:DPGATE_TEST_PASSWORD\"\ntoken = \"env:DPGATE_TEST_TOKEN\"",
        )
}

/// dpgate over a fresh visits table with the HTTP front end on.
async fn gate_with_http(
    prefix: &str,
    budget: f64,
    extra: &str,
) -> (String, tempfile::TempDir, Dpgate, u16) {
    let (db, _) = visits_database(prefix, 300).await;
    let dir = tempdir();
    let (port, http_port) = (free_port(), free_port());
    std::env::set_var("DPGATE_TEST_TOKEN", TOKEN);
    std::env::set_var("DPGATE_TEST_METRICS_TOKEN", METRICS_TOKEN);
    let gate = Dpgate::start(
        dir.path(),
        &http_toml(&db, port, http_port, dir.path(), budget, extra),
        port,
    );
    wait_for_port(http_port);
    (db, dir, gate, http_port)
}

fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn curl(args: &[&str]) -> (u16, Value) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status.trim().parse().unwrap(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_private_answers_that_share_the_wire_budget() {
    let (_db, _dir, gate, http) = gate_with_http("http_curl", 3.0, "").await;
    let url = format!("http://127.0.0.1:{http}/v1/query");
    let login = format!("analyst:{PASSWORD}");
    let sql =
        r#"{"sql":"SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward ORDER BY ward"}"#;
    // curl -d sends application/x-www-form-urlencoded; the body is JSON all the same.
    let (status, answer) = curl(&["-u", &login, "-d", sql, &url]);
    assert_eq!(status, 200, "{answer}");
    let rows = answer["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{answer}");
    assert_eq!(rows[0][0], "A");
    assert!(
        rows[0][1].is_i64() && rows[0][2].is_f64(),
        "types kept: {answer}"
    );
    assert_eq!(
        answer["columns"][1],
        json!({"name": "count", "type": "bigint"})
    );
    assert_eq!(answer["accuracy"].as_array().unwrap().len(), 2);
    assert_eq!(answer["accuracy"][0]["confidence"], 0.95);
    assert!(answer["accuracy"][1]["half_width"].as_f64().unwrap() > 0.0);
    assert_eq!(answer["cost"]["epsilon"], 0.1);
    assert_eq!(answer["repeat"], false);
    assert_eq!(answer["synthetic"], false);
    assert!(answer["query_id"].is_string());
    let remaining = answer["remaining"]["epsilon"].as_f64().unwrap();
    assert!((remaining - 2.9).abs() < 1e-9, "{answer}");

    // The same budget over the wire.
    let (client, _notices) = gate.connect().await;
    assert_eq!(
        simple_row(&client, "SHOW dp.budget").await[0].as_deref(),
        Some("2.9")
    );
    // A wire answer is charged there and seen over HTTP.
    client
        .simple_query("SELECT COUNT(*) FROM visits")
        .await
        .unwrap();
    let (_, budget) = curl(&["-u", &login, &format!("http://127.0.0.1:{http}/v1/budget")]);
    assert!(
        (budget["epsilon"]["remaining"].as_f64().unwrap() - 2.8).abs() < 1e-9,
        "{budget}"
    );
    assert_eq!(budget["queries"], 2);
    // ... and a repeat over HTTP of that wire query is the kept release, free.
    let wire_count = simple_row(&client, "SELECT COUNT(*) FROM visits").await[0]
        .clone()
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");
    let repeat = query(
        http,
        &bearer,
        &json!({"sql": "SELECT COUNT(*) FROM visits"}),
    )
    .await
    .json();
    assert_eq!(repeat["repeat"], true, "{repeat}");
    assert_eq!(repeat["cost"]["epsilon"], 0.0);
    assert_eq!(repeat["rows"][0][0].to_string(), wire_count);

    // Python requests, as examples/http_client.py does it.
    let python = std::env::current_dir()
        .unwrap()
        .join("target/clients-venv/bin/python");
    if python.exists() {
        let out = std::process::Command::new(&python)
            .arg("examples/http_client.py")
            .env("DPGATE_URL", format!("http://127.0.0.1:{http}"))
            .env("DPGATE_USER", "analyst")
            .env("DPGATE_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("ward A"), "{stdout}");
    } else if std::env::var("DPGATE_REQUIRE_CLIENTS").is_ok() {
        panic!("target/clients-venv is missing (run .ci/run)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_sqlstates_and_hints() {
    let (_db, _dir, _gate, http) = gate_with_http("http_errors", 0.25, "max_body_kib = 16").await;
    let auth = basic("analyst", PASSWORD);

    // Logins: a wrong password and an unknown user get the same 401.
    let wrong = query(http, &basic("analyst", "nope"), &json!({"sql": "SELECT 1"})).await;
    let unknown = query(http, &basic("mallory", "nope"), &json!({"sql": "SELECT 1"})).await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.body, unknown.body);
    // Bearer, never Basic: a browser must not be invited to remember a
    // password it would send with other sites' requests.
    assert!(wrong
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(wrong.json()["code"], "28P01");
    assert_eq!(
        query(http, "Bearer not-a-token", &json!({"sql": "SELECT 1"}))
            .await
            .status,
        401
    );

    // Refused SQL: 400 with the SQLSTATE, message and hint of the wire side.
    let raw_rows = query(http, &auth, &json!({"sql": "SELECT * FROM visits"})).await;
    assert_eq!(raw_rows.status, 400);
    let e = raw_rows.json();
    assert_eq!(e["code"], "42501", "{e}");
    assert!(!e["hint"].as_str().unwrap().is_empty());
    let syntax = query(http, &auth, &json!({"sql": "SELEC COUNT(*) FROM visits"})).await;
    assert_eq!(
        (syntax.status, syntax.json()["code"].as_str()),
        (400, Some("42601"))
    );
    let two = query(http, &auth, &json!({"sql": "SELECT 1; SELECT 2"})).await;
    assert_eq!(two.status, 400);
    assert!(
        two.json()["message"]
            .as_str()
            .unwrap()
            .contains("2 statements"),
        "{:?}",
        two.json()
    );
    let set = query(http, &auth, &json!({"sql": "SET dp.epsilon = 1"})).await;
    assert!(
        set.json()["hint"].as_str().unwrap().contains("epsilon"),
        "{:?}",
        set.json()
    );
    let eps = query(
        http,
        &auth,
        &json!({"sql": "SELECT COUNT(*) FROM visits", "epsilon": 50}),
    )
    .await;
    assert_eq!(
        (eps.status, eps.json()["code"].as_str()),
        (400, Some("22023"))
    );
    let mech = query(
        http,
        &auth,
        &json!({"sql": "SELECT COUNT(*) FROM visits", "mechanism": "magic"}),
    )
    .await;
    assert_eq!(mech.status, 400);

    // Parameters are typed by the statement.
    let p = query(
        http,
        &auth,
        &json!({"sql": "SELECT COUNT(*) FROM visits WHERE age > $1", "params": [40]}),
    )
    .await;
    assert_eq!(p.status, 200, "{:?}", p.json());
    let bad_param = query(
        http,
        &auth,
        &json!({"sql": "SELECT COUNT(*) FROM visits WHERE age > $1", "params": ["forty"]}),
    )
    .await;
    assert_eq!(
        (bad_param.status, bad_param.json()["code"].as_str()),
        (400, Some("22023"))
    );

    // Explain costs nothing and hides the backend SQL.
    let plan = request(
        http,
        "POST",
        "/v1/explain",
        Some(&auth),
        Some(r#"{"sql":"SELECT COUNT(*), AVG(age) FROM visits","epsilon":0.05}"#),
    )
    .await;
    assert_eq!(plan.status, 200);
    let plan = plan.json();
    assert_eq!(plan["cost"]["epsilon"], 0.05);
    assert!(
        plan["columns"][0]["half_width"].as_f64().unwrap() > 0.0,
        "{plan}"
    );
    // A mean's interval depends on the data: reported with the answer.
    assert!(plan["columns"][1]["half_width"].is_null(), "{plan}");
    assert!(!plan["lines"].to_string().contains("__dp"), "{plan}");

    // The budget: 0.25 - 0.1 (the $1 query) = 0.15 left; 0.2 does not fit.
    let budget = request(http, "GET", "/v1/budget", Some(&auth), None)
        .await
        .json();
    assert!(
        (budget["epsilon"]["remaining"].as_f64().unwrap() - 0.15).abs() < 1e-9,
        "{budget}"
    );
    let over = query(
        http,
        &auth,
        &json!({"sql": "SELECT SUM(cost) FROM visits", "epsilon": 0.2}),
    )
    .await;
    assert_eq!(over.status, 429);
    let over = over.json();
    assert_eq!(over["code"], "53000");
    assert!(
        (over["remaining"]["epsilon"].as_f64().unwrap() - 0.15).abs() < 1e-9,
        "{over}"
    );

    // Bodies over http.max_body_kib: 413, declared or chunked.
    let big = json!({"sql": format!("SELECT COUNT(*) FROM visits WHERE ward = '{}'", "x".repeat(20_000))});
    let r = query(http, &auth, &big).await;
    assert_eq!((r.status, r.json()["code"].as_str()), (413, Some("54000")));
    let chunked = format!(
        "POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        20_000,
        "a".repeat(20_000)
    );
    assert_eq!(
        send_raw(http, chunked.as_bytes()).await.unwrap().status,
        413
    );

    // History: this user's own entries, refusals included, newest first.
    let history = request(http, "GET", "/v1/queries?limit=50", Some(&auth), None)
        .await
        .json();
    let entries = history["queries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|q| q["outcome"] == "refused" && q["code"] == "42501"),
        "{history}"
    );
    let ids: Vec<u64> = entries
        .iter()
        .map(|q| q["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(
        entries
            .iter()
            .any(|q| q["outcome"] == "charged" || q["outcome"] == "answered"),
        "{history}"
    );
    assert_eq!(
        request(http, "GET", "/v1/queries?limit=lots", Some(&auth), None)
            .await
            .status,
        400
    );

    // Schema from proxy.toml only.
    let tables = request(http, "GET", "/v1/tables", Some(&auth), None)
        .await
        .json();
    assert_eq!(tables["tables"][0]["name"], "visits");
    assert_eq!(tables["tables"][0]["privacy_unit"], "patient_id");
    assert_eq!(
        tables["tables"][0]["columns"][1]["values"],
        json!(["A", "B", "C"])
    );

    // Health, metrics (their own token), unknown routes and methods.
    assert_eq!(
        request(http, "GET", "/healthz", None, None).await.status,
        200
    );
    assert_eq!(
        request(http, "GET", "/metrics", Some(&auth), None)
            .await
            .status,
        401
    );
    let metrics = request(
        http,
        "GET",
        "/metrics",
        Some(&format!("Bearer {METRICS_TOKEN}")),
        None,
    )
    .await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert_eq!(metrics.status, 200);
    assert!(
        text.contains("dpgate_queries_total{outcome=\"answered\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dpgate_queries_total{outcome=\"refused\"}"),
        "{text}"
    );
    assert!(
        text.contains("dpgate_open_connections{front_end=\"http\"}"),
        "{text}"
    );
    let missing = request(http, "GET", "/v2/query", None, None).await;
    assert_eq!(
        (missing.status, missing.json()["code"].as_str()),
        (404, Some("42704"))
    );
    assert_eq!(
        request(http, "GET", "/v1/query", Some(&auth), None)
            .await
            .status,
        405
    );

    // Every documented route exists.
    let spec = request(http, "GET", "/v1/openapi.json", None, None)
        .await
        .json();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let body = (method == "post").then_some(r#"{"sql":"SELECT 1"}"#);
            let r = request(http, &method.to_uppercase(), path, Some(&auth), body).await;
            assert!(
                r.status != 404 && r.status != 405,
                "{method} {path}: {}",
                r.status
            );
        }
    }
    // The console page and its script, with a strict content policy.
    let page = request(http, "GET", "/", None, None).await;
    assert!(String::from_utf8_lossy(&page.body).contains("console.js"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
}

/// Requests a generator makes malformed in every way it can: bad JSON,
/// wrong types, huge and non-finite numbers, invalid UTF-8, bad headers,
/// truncated and oversized bodies, binary noise. None may crash the
/// server or charge anything.
fn malformed(i: usize, auth: &str, rng: &mut impl rand::Rng) -> Vec<u8> {
    let post = |body: &[u8], extra: &str| {
        let mut r = format!(
            "POST /v1/query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let authed = format!("Authorization: {auth}\r\n");
    let bodies: [&[u8]; 16] = [
        b"{",
        b"[]",
        b"null",
        b"{\"sql\": 5}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"epsilon\": 1e999}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"epsilon\": NaN}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"epsilon\": \"0.1\"}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"epsilon\": -1}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"params\": {\"a\": 1}}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits WHERE age > $1\", \"params\": [[1]]}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"unknown\": true}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"target_error\": {}}",
        b"{\"sql\": \"\xff\xfe SELECT\"}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits WHERE age > $1\", \"params\": [1e308], \"epsilon\": 0}",
        b"{\"sql\": \"SELECT COUNT(*) FROM visits\", \"epsilon\": 0.1, \"target_error\": -5}",
        b"\x00\x01\x02",
    ];
    match i % 8 {
        0..=3 => post(bodies[rng.gen_range(0..bodies.len())], &authed),
        4 => {
            // Random bytes as the body, sometimes a lying Content-Length.
            let body: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
            let mut r = post(&body, &authed);
            if rng.gen_bool(0.5) {
                r.truncate(r.len().saturating_sub(rng.gen_range(0..body.len().max(1))));
            }
            r
        }
        5 => {
            // Broken authorization headers.
            let headers = [
                "Authorization: Basic\r\n",
                "Authorization: Basic !!!\r\n",
                "Authorization: Basic YWJj\r\n",
                "Authorization: Bearer\r\n",
                "Authorization: Negotiate abc\r\n",
                "Authorization: Basic \u{7f}\u{1}\r\n",
            ];
            let h = headers[rng.gen_range(0..headers.len())];
            post(br#"{"sql":"SELECT COUNT(*) FROM visits"}"#, h)
        }
        6 => {
            // Garbage request lines and headers.
            let lines: [&[u8]; 6] = [
                b"GARBAGE\r\n\r\n",
                b"GET /v1/budget HTTP/9.9\r\n\r\n",
                b"POST /v1/query HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /v1/query HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                b"GET /v1/queries?since=abc&limit=-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            ];
            lines[rng.gen_range(0..lines.len())].to_vec()
        }
        _ => {
            // Pure noise.
            (0..rng.gen_range(1..400)).map(|_| rng.gen()).collect()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_leave_the_server_up_and_the_ledger_unchanged() {
    use rand::SeedableRng;
    let (db, _dir, gate, http) = gate_with_http("http_fuzz", 1.0, "header_timeout_s = 2").await;
    let auth = basic("analyst", PASSWORD);
    let before = gate.cli(&["budget", "show", "--format", "json"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xD96A7E);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..500 {
        let raw = malformed(i, &auth, &mut rng);
        // A dropped or timed-out connection is a fine answer to garbage.
        let started = std::time::Instant::now();
        let status = send_and_close(http, &raw)
            .await
            .map(|r| r.status)
            .unwrap_or(0);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request {i} took {:?}",
            started.elapsed()
        );
        assert!(
            status != 200 && status < 500,
            "request {i} got {status}: {:?}",
            String::from_utf8_lossy(&raw)
        );
        *statuses.entry(status).or_insert(0) += 1;
    }
    eprintln!("statuses of 500 malformed requests: {statuses:?}");
    assert!(
        statuses.get(&400).copied().unwrap_or(0) > 100,
        "{statuses:?}"
    );
    // Up, and nothing was charged or read.
    assert_eq!(
        request(http, "GET", "/healthz", None, None).await.status,
        200
    );
    let ok = query(http, &auth, &json!({"sql": "SELECT COUNT(*) FROM visits"})).await;
    assert_eq!(ok.status, 200);
    let after: Vec<Value> =
        serde_json::from_str(&gate.cli(&["budget", "show", "--format", "json"])).unwrap();
    let before: Vec<Value> = serde_json::from_str(&before).unwrap();
    let spent = |v: &[Value]| {
        v.iter()
            .find(|a| a["account"] == "analyst")
            .map(|a| {
                (
                    a["epsilon_spent"].as_f64().unwrap_or(0.0),
                    a["queries"].as_i64().unwrap_or(0),
                )
            })
            .unwrap_or((0.0, 0))
    };
    assert_eq!(spent(&before), (0.0, 0));
    assert_eq!(
        spent(&after),
        (0.1, 1),
        "only the one good query was charged"
    );
    assert_eq!(cluster().logged(&db, "__dp_rows"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_http_and_thirty_two_wire_clients_share_one_budget() {
    let (db, _dir, gate, http) = gate_with_http("http_race", 1.0, "").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for c in 0..64 {
        let barrier = barrier.clone();
        let url = gate.url("analyst", PASSWORD);
        tasks.push(tokio::spawn(async move {
            // Distinct queries: none is a free repeat of another.
            let sql = format!("SELECT COUNT(*) FROM visits WHERE cost > {c}");
            if c % 2 == 0 {
                let auth = basic("analyst", PASSWORD);
                // Log in once before the start, as the wire clients do.
                assert_eq!(
                    request(http, "GET", "/v1/budget", Some(&auth), None)
                        .await
                        .status,
                    200
                );
                barrier.wait().await;
                let r = query(http, &auth, &json!({"sql": sql})).await;
                match r.status {
                    200 => 1,
                    429 => 0,
                    s => panic!("unexpected {s}: {:?}", r.json()),
                }
            } else {
                let (client, _n) = connect_collecting(&url).await.unwrap();
                barrier.wait().await;
                match client.simple_query(&sql).await {
                    Ok(_) => 1,
                    Err(e) if e.code().map(|c| c.code()) == Some("53000") => 0,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        }));
    }
    let answered: i32 = tokio::time::timeout(Duration::from_secs(120), async {
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    })
    .await
    .expect("the race finished");
    assert_eq!(answered, 10);
    let accounts: Vec<Value> =
        serde_json::from_str(&gate.cli(&["budget", "show", "--format", "json"])).unwrap();
    let a = accounts.iter().find(|a| a["account"] == "analyst").unwrap();
    assert_eq!(
        (a["epsilon_spent"].as_f64(), a["queries"].as_i64()),
        (Some(1.0), Some(10))
    );
    // The audit log agrees: ten charged entries, from both front ends.
    let audit: Vec<Value> =
        serde_json::from_str(&gate.cli(&["audit", "--format", "json", "--limit", "1000"])).unwrap();
    let charged: Vec<&Value> = audit
        .iter()
        .filter(|e| e["epsilon"].as_f64().unwrap_or(0.0) > 0.0)
        .collect();
    assert_eq!(charged.len(), 10, "{audit:?}");
    // Both front ends took part: 32 entries each, charged or refused.
    let from = |prefix: &str| {
        audit
            .iter()
            .filter(|e| {
                e["client"].as_str().unwrap_or("").starts_with(prefix)
                    && e["statement"].as_str().unwrap_or("").contains("cost >")
            })
            .count()
    };
    assert_eq!((from("http"), from("127.0.0.1")), (32, 32), "{audit:?}");
    assert_eq!(cluster().logged(&db, "__dp_rows"), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_idle_connections() {
    let (_db, _dir, _gate, http) = gate_with_http(
        "http_limits",
        1.0,
        "max_connections = 2\nidle_timeout_s = 2\nheader_timeout_s = 2",
    )
    .await;
    // Connections without a login hold no slot: three of them, kept
    // alive, do not keep an analyst out.
    let auth = basic("analyst", PASSWORD);
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            common::http::read_response(&mut s).await.unwrap().status,
            200
        );
        idle.push(s);
    }
    // Two authenticated keep-alive connections fill the slots; a third
    // authenticated request gets 503 / 53300.
    let keep_alive = format!("GET /v1/budget HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, keep_alive.as_bytes())
            .await
            .unwrap();
        assert_eq!(
            common::http::read_response(&mut s).await.unwrap().status,
            200
        );
        held.push(s);
    }
    let third = request(http, "GET", "/v1/budget", Some(&auth), None).await;
    assert_eq!(third.status, 503);
    assert_eq!(third.json()["code"], "53300");
    // Without a login the same request is refused as a login, not a slot.
    assert_eq!(
        request(http, "GET", "/v1/budget", None, None).await.status,
        401
    );
    // Idle connections are closed after http.idle_timeout_s, which frees
    // their slots.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        request(http, "GET", "/healthz", None, None).await.status,
        200
    );
    for mut s in held {
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "the idle connection was closed");
    }
}

/// The console in Debian's Chromium, driven by Playwright
/// (`clients/node/console.js`): log in, run a grouped query, see rows and
/// error bars, see the budget go down, see a refusal's message and hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let playwright = std::path::Path::new("clients/node/node_modules/playwright-core");
    if !std::path::Path::new(&chromium).exists() || !playwright.exists() {
        assert!(
            std::env::var("DPGATE_REQUIRE_CLIENTS").is_err(),
            "Chromium ({chromium}) or playwright-core is missing (run .ci/run)"
        );
        eprintln!("skipped: no Chromium or playwright-core here");
        return;
    }
    let (_db, _dir, _gate, http) = gate_with_http("http_console", 3.0, "").await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("clients/node/console.js")
            .env("DPGATE_CONSOLE_URL", format!("http://127.0.0.1:{http}/"))
            .env("DPGATE_USER", "analyst")
            .env("DPGATE_PASSWORD", PASSWORD)
            .env("CHROMIUM", &chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: a bar chart with an error bar per group"));
}

/// With `[server]` TLS, the HTTP side serves HTTPS only, with the same
/// certificate; a SIGHUP reload applies to HTTP logins as to the wire's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_wire_certificate_and_reload() {
    let c = cluster();
    let tls = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        c.dir.join("server.pem"),
        c.dir.join("server.key")
    );
    let (db, _) = visits_database("http_tls", 100).await;
    let dir = tempdir();
    let (port, http) = (free_port(), free_port());
    std::env::set_var("DPGATE_TEST_TOKEN", TOKEN);
    std::env::set_var("DPGATE_TEST_METRICS_TOKEN", METRICS_TOKEN);
    let config = http_toml(&db, port, http, dir.path(), 1.0, "").replacen("[server]\n", &tls, 1);
    let gate = Dpgate::start(dir.path(), &config, port);
    wait_for_port(http);
    let ca = c.ca.display().to_string();
    let login = format!("analyst:{PASSWORD}");
    let https = format!("https://localhost:{http}");
    let (status, body) = curl(&["--cacert", &ca, "-u", &login, &format!("{https}/v1/budget")]);
    assert_eq!(
        (status, body["user"].as_str()),
        (200, Some("analyst")),
        "{body}"
    );
    // Plain HTTP on the TLS port gets no answer.
    assert!(send_raw(http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .is_err());

    // A user added by a reload (token declared by its digest) can use
    // the token right after it, not before.
    let newbie = "newbie-token-0123456789abcdef";
    let bearer = format!("Authorization: Bearer {newbie}");
    let (status, _) = curl(&[
        "--cacert",
        &ca,
        "-H",
        &bearer,
        &format!("{https}/v1/budget"),
    ]);
    assert_eq!(status, 401);
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{newbie}' | sha256sum"))
        .output()
        .unwrap();
    let digest = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        gate.config_path(),
        format!(
            "{config}\n[[users]]\nname = \"newbie\"\npassword = \"env:DPGATE_TEST_PASSWORD\"\ntoken = \"sha256:{digest}\"\nepsilon_budget = 0.5\n"
        ),
    )
    .unwrap();
    gate.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = curl(&[
            "--cacert",
            &ca,
            "-H",
            &bearer,
            &format!("{https}/v1/budget"),
        ]);
        if status == 200 {
            assert_eq!(body["user"], "newbie");
            assert_eq!(body["epsilon"]["limit"], 0.5);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not reach HTTP logins"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A page on another site cannot make a browser spend an analyst's
/// budget with credentials the browser remembers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_another_site_are_refused() {
    let (_db, _dir, _gate, http) = gate_with_http("http_csrf", 1.0, "").await;
    let auth = basic("analyst", PASSWORD);
    let body = r#"{"sql":"SELECT COUNT(*) FROM visits"}"#;
    let post = |extra: &str| {
        format!(
            "POST /v1/query HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\nAuthorization: {auth}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for extra in [
        "Origin: https://evil.example\r\n",
        "Origin: null\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let r = send_raw(http, post(extra).as_bytes()).await.unwrap();
        assert_eq!(r.status, 403, "{extra}");
    }
    // The console's own origin, and clients that send no Origin, pass.
    let same = send_raw(
        http,
        post(&format!(
            "Origin: http://127.0.0.1:{http}\r\nSec-Fetch-Site: same-origin\r\n"
        ))
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(same.status, 200, "{}", String::from_utf8_lossy(&same.body));
    let budget = request(http, "GET", "/v1/budget", Some(&auth), None)
        .await
        .json();
    assert_eq!(
        budget["queries"], 1,
        "only the same-origin request was charged"
    );
}

/// A query that fails on the backend after its charge shows the analyst,
/// in their history too, only the fixed text: the backend's own message
/// may depend on the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_charge_shows_no_backend_detail() {
    let (db, _dir, _gate, http) = gate_with_http("http_failed", 1.0, "").await;
    let auth = basic("analyst", PASSWORD);
    // The data owner renames a column under a running dpgate.
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute("ALTER TABLE visits RENAME COLUMN age TO age_secret_name")
        .await
        .unwrap();
    let r = query(http, &auth, &json!({"sql": "SELECT AVG(age) FROM visits"})).await;
    assert_eq!(r.status, 503);
    let e = r.json();
    assert_eq!(e["code"], "58000");
    let history = request(http, "GET", "/v1/queries", Some(&auth), None).await;
    let text = String::from_utf8_lossy(&history.body).to_string();
    assert!(text.contains("\"failed\""), "{text}");
    assert!(
        !text.contains("age_secret_name") && !text.contains("does not exist"),
        "{text}"
    );
    assert!(text.contains(e["message"].as_str().unwrap()), "{text}");
}

/// Parameters: at most one per placeholder, and a huge array is refused
/// while it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_bounded() {
    let (_db, _dir, _gate, http) = gate_with_http("http_params", 1.0, "").await;
    let auth = basic("analyst", PASSWORD);
    let extra = query(
        http,
        &auth,
        &json!({"sql": "SELECT COUNT(*) FROM visits WHERE age > $1", "params": [1, 2]}),
    )
    .await;
    assert_eq!(
        (extra.status, extra.json()["code"].as_str()),
        (400, Some("22023"))
    );
    let many = json!({"sql": "SELECT COUNT(*) FROM visits", "params": vec![0; 70_000]});
    let r = request(
        http,
        "POST",
        "/v1/explain",
        Some(&auth),
        Some(&many.to_string()),
    )
    .await;
    assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("08P01")));
    assert!(
        r.json()["message"].as_str().unwrap().contains("65535"),
        "{:?}",
        r.json()
    );
}

/// One token, one user: `dpgate check` refuses a token two users share,
/// without printing it.
#[test]
fn a_token_shared_by_two_users_is_refused() {
    let dir = tempdir();
    let config = http_toml("nodb", free_port(), free_port(), dir.path(), 1.0, "")
        + "\n[[users]]\nname = \"other\"\npassword = \"env:DPGATE_TEST_PASSWORD\"\ntoken = \"env:DPGATE_TEST_TOKEN\"\nepsilon_budget = 1\n";
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("DPGATE_TEST_PASSWORD", PASSWORD)
        .env("DPGATE_TEST_TOKEN", TOKEN)
        .env("DPGATE_TEST_METRICS_TOKEN", METRICS_TOKEN)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("users[1].token") && err.contains("same token"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "the token is not printed: {err}");
}

/// SIGTERM: the HTTP listener closes, a request already running still
/// gets its answer, and dpgate exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_http_query_finish() {
    let (db, _dir, mut gate, http) = gate_with_http("http_term", 1.0, "").await;
    let lock = connect_direct(&cluster().url(&db)).await;
    lock.batch_execute("BEGIN; LOCK TABLE visits IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let auth = basic("analyst", PASSWORD);
    let running = tokio::spawn(async move {
        query(http, &auth, &json!({"sql": "SELECT COUNT(*) FROM visits"})).await
    });
    // The backend query is waiting on the lock.
    let watcher = connect_direct(&cluster().url(&db)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'dpgate' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the query never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTP listener stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(lock);
    let answer = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = gate.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "dpgate did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Row-level queries over a table with synthetic rows answer over HTTP
/// too: typed JSON cells, the notice, no cost; EXPLAIN says what they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_queries_get_synthetic_rows_over_http() {
    let (db, _) = visits_database("http_synthetic", 300).await;
    let dir = tempdir();
    let (port, http_port) = (free_port(), free_port());
    std::env::set_var("DPGATE_TEST_TOKEN", TOKEN);
    std::env::set_var("DPGATE_TEST_METRICS_TOKEN", METRICS_TOKEN);
    let config = http_toml(&db, port, http_port, dir.path(), 1.0, "")
        + "[tables.synthetic]\nepsilon = 1\nrows = 300\nmax_rows = 25\n";
    let gate = Dpgate::start(dir.path(), &config, port);
    wait_for_port(http_port);
    let login = format!("analyst:{PASSWORD}");
    let query = format!("http://127.0.0.1:{http_port}/v1/query");
    // Until the start-up fit is done: 503 with SQLSTATE 55000.
    let answered = || {
        curl(&[
            "-u",
            &login,
            "-d",
            r#"{"sql":"SELECT * FROM visits"}"#,
            &query,
        ])
    };
    wait_for_synthetic(|| {
        let (status, answer) = answered();
        if status == 503 {
            assert_eq!(answer["code"], "55000", "{answer}");
        }
        (status == 200, answer.to_string())
    });
    let (status, answer) = answered();
    assert_eq!(status, 200, "{answer}\n{}", gate.log.lock().unwrap());
    assert_eq!(answer["synthetic"], true);
    assert_eq!(answer["cost"]["epsilon"], 0.0);
    assert!(answer["notice"]
        .as_str()
        .unwrap()
        .contains("no row is a real person"));
    let rows = answer["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 25, "{answer}");
    let columns: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let age = columns.iter().position(|c| *c == "age").unwrap();
    assert!(rows
        .iter()
        .all(|r| r[age].as_i64().is_some_and(|a| (0..=110).contains(&a))));
    let (status, answer) = curl(&[
        "-u",
        &login,
        "-d",
        r#"{"sql":"SELECT age FROM visits WHERE age > 50 ORDER BY age LIMIT 5"}"#,
        &query,
    ]);
    assert_eq!(status, 200, "{answer}");
    let ages: Vec<i64> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    assert!(ages.len() == 5 && ages.iter().all(|&a| a > 50), "{answer}");
    let explain = format!("http://127.0.0.1:{http_port}/v1/explain");
    let (status, plan) = curl(&[
        "-u",
        &login,
        "-d",
        r#"{"sql":"SELECT * FROM visits"}"#,
        &explain,
    ]);
    assert_eq!(status, 200, "{plan}");
    assert!(
        plan["plan"][0]
            .as_str()
            .unwrap()
            .contains("no row is a real person"),
        "{plan}"
    );
    let (status, refused) = curl(&[
        "-u",
        &login,
        "-d",
        r#"{"sql":"SELECT age FROM visits WHERE age > $1","params":[3]}"#,
        &query,
    ]);
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("0A000")),
        "{refused}"
    );
}
