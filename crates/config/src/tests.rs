use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:6432"
[backend]
url = "postgres://dpgate@127.0.0.1:5432/warehouse"
[ledger]
path = "ledger.sqlite"
[privacy]
default_epsilon = 0.1
delta = 1e-6
[[users]]
name = "analyst"
password = "env:ANALYST_PASSWORD"
epsilon_budget = 3.0
[[tables]]
name = "public.visits"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = { type = "int", lower = 0, upper = 110 }
columns.ward = { type = "text", values = ["A", "B", "C"] }
columns.cost = { type = "float", lower = 0, upper = 5000 }
"#;

fn env(name: &str) -> Option<String> {
    (name == "ANALYST_PASSWORD").then(|| "secret".to_string())
}

#[test]
fn good_config_loads() {
    let c = Config::parse(GOOD, &env).unwrap();
    assert_eq!(c.users[0].secret, Secret::Password("secret".into()));
    let t = c.table(None, "VISITS").unwrap();
    assert_eq!(
        t.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["age", "ward", "cost"]
    );
    assert_eq!(t.column("age").unwrap().bounds, Some((0.0, 110.0)));
    assert_eq!(
        t.privacy,
        TablePrivacy::Private {
            privacy_unit: Some("patient_id".into()),
            max_rows_per_unit: 5,
            unique_unit: false,
        }
    );
    assert!(c.table(Some("other"), "visits").is_none());
}

fn errors(text: &str) -> Vec<String> {
    Config::parse(text, &env)
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

/// ε settings past what the ledger's nano-ε integers hold are refused:
/// beyond them costs would round down and a budget stop filling.
#[test]
fn budgets_beyond_the_ledger_are_refused() {
    let big = GOOD
        .replace("epsilon_budget = 3.0", "epsilon_budget = 1e12")
        .replace(
            "default_epsilon = 0.1",
            "default_epsilon = 0.1\nmax_epsilon_per_query = 2e9",
        );
    assert_eq!(
        errors(&big),
        [
            "privacy.max_epsilon_per_query: 2000000000 is above dpgate's largest ε, 1e9: the ledger counts ε in nano-ε units of 64 bits",
            "users[0].epsilon_budget: 1000000000000 is above dpgate's largest ε, 1e9: the ledger counts ε in nano-ε units of 64 bits",
        ]
    );
    let edge = GOOD.replace("epsilon_budget = 3.0", "epsilon_budget = 1e9");
    assert!(Config::parse(&edge, &env).is_ok());
}

#[test]
fn reversed_bounds_are_reported_with_their_path() {
    let bad = GOOD.replace("lower = 0, upper = 110", "lower = 10, upper = 5");
    assert_eq!(
        errors(&bad),
        ["tables[0].columns.age: lower 10 is above upper 5"]
    );
}

#[test]
fn every_problem_is_reported() {
    let bad = GOOD
        .replace("env:ANALYST_PASSWORD", "env:MISSING")
        .replace("epsilon_budget = 3.0", "epsilon_budget = -1")
        .replace("type = \"float\"", "type = \"money\"")
        .replace("127.0.0.1:6432", "nowhere");
    let e = errors(&bad);
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e
        .iter()
        .any(|m| m.starts_with("users[0].password: environment variable MISSING")));
    assert!(e.iter().any(|m| m.starts_with("users[0].epsilon_budget")));
    assert!(e
        .iter()
        .any(|m| m.starts_with("tables[0].columns.cost.type")));
    assert!(e.iter().any(|m| m.starts_with("server.listen")));
}

#[test]
fn unknown_keys_and_syntax_errors_name_the_place() {
    let bad = GOOD.replace("max_rows_per_unit = 5", "max_row_per_unit = 5");
    let err = Config::parse(&bad, &env).unwrap_err();
    assert!(err.0[0].message.contains("max_row_per_unit"), "{err}");
    assert!(err.0[0].fix.contains("line"), "{err}");
    assert!(Config::parse("[backend", &env).is_err());
}

#[test]
fn cleartext_passwords_are_refused() {
    let bad = GOOD.replace("env:ANALYST_PASSWORD", "hunter2");
    assert!(errors(&bad)[0].contains("cleartext"));
    let verifier = GOOD.replace(
        "env:ANALYST_PASSWORD",
        "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy",
    );
    assert!(Config::parse(&verifier, &env).is_ok());
}

#[test]
fn budgets_default_and_override_per_user() {
    let c = Config::parse(GOOD, &env).unwrap();
    let b = c.users[0].budget;
    assert_eq!((b.epsilon, b.refresh), (3.0, None));
    assert!((b.delta - 1e-4).abs() < 1e-18, "100 × delta by default");
    assert_eq!(c.privacy.dataset_budget, None);
    assert_eq!(c.ledger, LedgerStore::Sqlite("ledger.sqlite".into()));
    assert!(c.cache.enabled);

    let text = GOOD
        .replace(
            "delta = 1e-6",
            "delta = 1e-6\nrefresh = \"30d\"\ndataset_epsilon_budget = 10",
        )
        .replace(
            "epsilon_budget = 3.0",
            "epsilon_budget = 3.0\ndelta_budget = 0\nrefresh = \"never\"",
        )
        .replace("path = \"ledger.sqlite\"", "url = \"postgres://u:pw@h/l\"")
        + "[cache]\nmax_age = \"12h\"\n";
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.users[0].budget.delta, 0.0);
    assert_eq!(c.users[0].budget.refresh, None);
    let d = c.privacy.dataset_budget.unwrap();
    assert_eq!(d.epsilon, 10.0);
    assert_eq!(d.refresh, Some(std::time::Duration::from_secs(30 * 86_400)));
    assert_eq!(
        c.cache.max_age,
        Some(std::time::Duration::from_secs(12 * 3600))
    );
    assert_eq!(c.ledger.to_string(), "postgres://u:***@h/l");
}

#[test]
fn bad_budget_settings_are_named() {
    let text = GOOD
        .replace(
            "delta = 1e-6",
            "delta = 1e-6\nrefresh = \"soon\"\ndataset_delta_budget = 1e-5",
        )
        .replace(
            "epsilon_budget = 3.0",
            "epsilon_budget = 3.0\ndelta_budget = 2",
        )
        .replace(
            "path = \"ledger.sqlite\"",
            "path = \"l\"\nurl = \"postgres://h/l\"",
        );
    let e = errors(&text);
    for path in [
        "privacy.refresh",
        "privacy.dataset_epsilon_budget",
        "users[0].delta_budget",
        "ledger:",
    ] {
        assert!(
            e.iter().any(|m| m.starts_with(path)),
            "{path} missing in {e:?}"
        );
    }
}

#[test]
fn sqlite_backend_with_csv_sources_anchors_paths_at_the_config() {
    let text = GOOD
        .replace(
            "url = \"postgres://dpgate@127.0.0.1:5432/warehouse\"",
            "sqlite = \"demo.db\"",
        )
        .replace(
            "name = \"public.visits\"",
            "name = \"visits\"\ncsv = \"data/visits.csv\"",
        );
    let mut c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.backend.store, BackendStore::Sqlite("demo.db".into()));
    c.anchor_paths(std::path::Path::new("/srv/dp"));
    assert_eq!(
        c.backend.store,
        BackendStore::Sqlite("/srv/dp/demo.db".into())
    );
    assert_eq!(
        c.ledger,
        LedgerStore::Sqlite("/srv/dp/ledger.sqlite".into())
    );
    assert_eq!(
        c.tables[0].csv.as_deref(),
        Some(std::path::Path::new("/srv/dp/data/visits.csv"))
    );
}

#[test]
fn csv_and_schemas_need_the_sqlite_backend() {
    let csv_on_pg = GOOD.replace(
        "name = \"public.visits\"",
        "name = \"visits\"\ncsv = \"v.csv\"",
    );
    let e = Config::parse(&csv_on_pg, &env).unwrap_err().to_string();
    assert!(e.contains("tables[0].csv") && e.contains("sqlite"), "{e}");
    let both = GOOD.replace("[backend]\n", "[backend]\nsqlite = \"x.db\"\n");
    let e = Config::parse(&both, &env).unwrap_err().to_string();
    assert!(e.contains("more than one of url, sqlite and spark"), "{e}");
    let schema = GOOD
        .replace(
            "url = \"postgres://dpgate@127.0.0.1:5432/warehouse\"",
            "sqlite = \"x.db\"",
        )
        .replace("public.visits", "clinic.visits");
    let e = Config::parse(&schema, &env).unwrap_err().to_string();
    assert!(
        e.contains("one schema") && e.contains("write name = \"visits\""),
        "{e}"
    );
}

#[test]
fn spark_backends_map_table_names_and_need_unit_columns() {
    let spark = GOOD
        .replace(
            "url = \"postgres://dpgate@127.0.0.1:5432/warehouse\"",
            "spark = \"sc://127.0.0.1:15002\"",
        )
        .replace(
            "name = \"public.visits\"",
            "name = \"visits\"\nbackend_name = \"lake.`/data/v.parquet`\"",
        );
    let c = Config::parse(&spark, &env).unwrap();
    assert_eq!(
        c.backend.store,
        BackendStore::Spark("sc://127.0.0.1:15002".into())
    );
    assert_eq!(
        c.tables[0].backend_name,
        Some(vec!["lake".to_string(), "/data/v.parquet".to_string()])
    );
    // Spark has no row identity for a row-level unit, and rewrites `$`.
    let row_level = spark.replace("privacy_unit = \"patient_id\"\n", "");
    let e = Config::parse(&row_level, &env).unwrap_err().to_string();
    assert!(
        e.contains("tables[0].privacy_unit") && e.contains("row identity"),
        "{e}"
    );
    let dollar = spark.replace("lake.", "la${x}ke.");
    let e = Config::parse(&dollar, &env).unwrap_err().to_string();
    assert!(e.contains("variable substitution"), "{e}");
    for bad in ["a.b.c.d", "a..b", "lake.`open"] {
        let e = Config::parse(&spark.replace("lake.`/data/v.parquet`", bad), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tables[0].backend_name"), "{bad}: {e}");
    }
    // Elsewhere backend_name means nothing, so it is refused.
    let on_pg = GOOD.replace(
        "name = \"public.visits\"",
        "name = \"visits\"\nbackend_name = \"x.visits\"",
    );
    let e = Config::parse(&on_pg, &env).unwrap_err().to_string();
    assert!(e.contains("not Spark"), "{e}");
    let url = GOOD.replace("postgres://dpgate@127.0.0.1:5432/warehouse", "sc://x:1");
    let e = Config::parse(&url, &env).unwrap_err().to_string();
    assert!(e.contains("spark = "), "{e}");
}

/// An int column's bounds stay within ±2^62: a bound of i64::MAX, read
/// as a double, is 2^63, and a stored 2^63 would pass the clamp and then
/// fail the cast to bigint for that row alone.
#[test]
fn int_bounds_fit_a_bigint_after_rounding() {
    let env = |_: &str| Some("x".to_string());
    for bound in ["9223372036854775807", "1e30", "4611686018427389000"] {
        let wide = GOOD.replace(
            "columns.age = { type = \"int\", lower = 0, upper = 110 }",
            &format!("columns.age = {{ type = \"int\", lower = 0, upper = {bound} }}"),
        );
        let e = Config::parse(&wide, &env).unwrap_err().to_string();
        assert!(
            e.contains("columns.age") && e.contains("2^62"),
            "{bound}: {e}"
        );
    }
    let edge = GOOD.replace(
        "columns.age = { type = \"int\", lower = 0, upper = 110 }",
        "columns.age = { type = \"int\", lower = -4611686018427387904, upper = 4611686018427387904 }\ncolumns.big = { type = \"float\", lower = 0, upper = 1e30 }",
    );
    Config::parse(&edge, &env).unwrap();
}

/// The rewrite names its own columns __dp_…: a declared name there is refused.
#[test]
fn names_of_the_rewrite_are_reserved() {
    let env = |_: &str| Some("x".to_string());
    let column = GOOD.replace("columns.age =", "columns.__DP_a0 =");
    let e = Config::parse(&column, &env).unwrap_err().to_string();
    assert!(
        e.contains("columns.__DP_a0") && e.contains("reserved"),
        "{e}"
    );
    let unit = GOOD.replace("privacy_unit = \"patient_id\"", "privacy_unit = \"__dp_u\"");
    let e = Config::parse(&unit, &env).unwrap_err().to_string();
    assert!(e.contains("privacy_unit") && e.contains("reserved"), "{e}");
}

/// Two spellings of one value in a domain would release one group twice.
#[test]
fn duplicate_domain_values_are_refused_with_their_place() {
    let dup = GOOD.replace(
        "columns.age = { type = \"int\", lower = 0, upper = 110 }",
        "columns.age = { type = \"int\", lower = 0, upper = 110 }\ncolumns.band = { type = \"int\", values = [\"1\", \"01\"] }\ncolumns.tag = { type = \"text\", values = [\"A\", \"B\", \"A\"] }\ncolumns.flag = { type = \"bool\", values = [\"t\", \"true\"] }\ncolumns.n = { type = \"int\", values = [\"x\"] }",
    );
    let e = Config::parse(&dup, &|_| Some("x".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("columns.band.values[1]"), "{e}");
    assert!(e.contains("columns.tag.values[2]"), "{e}");
    assert!(e.contains("columns.flag.values[1]"), "{e}");
    assert!(e.contains("columns.n.values[0]"), "{e}");
}

/// No message about a bad config shows a secret it holds: a password in a
/// URL (userinfo or parameter), or a user's password, whether the text
/// fails as TOML, as a type, or in validation.
#[test]
fn errors_never_show_secrets() {
    let pw = "Tr0ub4dor&3";
    let cases = [
        // A TOML syntax error on the line with the URL.
        GOOD.replace(
            "url = \"postgres://dpgate@127.0.0.1:5432/warehouse\"",
            &format!("url = \"postgres://dpgate:{pw}@127.0.0.1:5432/warehouse\" garbage"),
        ),
        // Not a PostgreSQL URL.
        GOOD.replace(
            "url = \"postgres://dpgate@127.0.0.1:5432/warehouse\"",
            &format!("url = \"mysql://dpgate:{pw}@db/warehouse\""),
        ),
        // A password parameter, and an unknown key beside it.
        GOOD.replace(
            "url = \"postgres://dpgate@127.0.0.1:5432/warehouse\"",
            &format!("url = \"mysql://db/warehouse?sslmode=require&password={pw}\"\nuri = 1"),
        ),
        // A PostgreSQL ledger URL with a password, and a catalog URL.
        GOOD.replace(
            "path = \"ledger.sqlite\"",
            &format!("url = \"postgres://l:{pw}@h/db\"\npath = \"x\""),
        ) + &format!("[catalog]\nurl = \"postgres://c:{pw}@h/db\"\n"),
        // A cleartext user password, with a type error in the same table.
        GOOD.replace(
            "password = \"env:ANALYST_PASSWORD\"",
            &format!("password = \"{pw}\""),
        )
        .replace("epsilon_budget = 3.0", "epsilon_budget = \"lots\""),
        GOOD.replace(
            "password = \"env:ANALYST_PASSWORD\"",
            &format!("password = \"{pw}\""),
        ),
        // A URL pasted into a field of another type: serde echoes it.
        GOOD.replace(
            "default_epsilon = 0.1",
            &format!("default_epsilon = \"postgres://u:{pw}@h/db\""),
        ),
        GOOD.replace(
            "listen = \"127.0.0.1:6432\"",
            &format!("listen = \"postgres://u:{pw}@h/db\""),
        ),
    ];
    for (i, text) in cases.iter().enumerate() {
        let shown = errors(text).join("\n");
        assert!(!shown.is_empty(), "case {i} should fail");
        assert!(!shown.contains(pw), "case {i} shows the password: {shown}");
        assert!(!shown.contains("Tr0ub4"), "case {i}: {shown}");
    }
}

#[test]
fn a_unique_privacy_unit_is_one_row_per_unit() {
    let unique = GOOD.replace("max_rows_per_unit = 5", "privacy_unit_unique = true");
    let c = Config::parse(&unique, &env).unwrap();
    assert_eq!(
        c.tables[0].privacy,
        TablePrivacy::Private {
            privacy_unit: Some("patient_id".into()),
            max_rows_per_unit: 1,
            unique_unit: true,
        }
    );
    // More than one row per unit contradicts it.
    let many = GOOD.replace(
        "max_rows_per_unit = 5",
        "max_rows_per_unit = 5\nprivacy_unit_unique = true",
    );
    assert!(errors(&many)[0].starts_with("tables[0].max_rows_per_unit"));
    // It names a column; without one each row is already a unit.
    let no_unit = GOOD
        .replace("privacy_unit = \"patient_id\"\n", "")
        .replace("max_rows_per_unit = 5", "privacy_unit_unique = true");
    assert!(errors(&no_unit)[0].starts_with("tables[0].privacy_unit_unique"));
}

#[test]
fn http_front_end_and_tokens() {
    let text = GOOD.replace(
        "[[users]]\nname = \"analyst\"\npassword = \"env:ANALYST_PASSWORD\"",
        "[http]\nlisten = \"127.0.0.1:8080\"\nmax_body_kib = 64\n[[users]]\nname = \"analyst\"\npassword = \"env:ANALYST_PASSWORD\"\ntoken = \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
    );
    let c = Config::parse(&text, &env).unwrap();
    let http = c.http.as_ref().unwrap();
    assert_eq!(http.listen.port(), 8080);
    assert_eq!(http.max_body_bytes, 64 * 1024);
    assert_eq!(http.max_connections, c.server.max_connections);
    assert!(matches!(c.users[0].token, Some(Token(d)) if d[0] == 0x9f));
    // sha256("test"), the digest above: one token.
    assert_eq!(c.users[0].token, Some(Token::of("test")));
    // No [http]: no HTTP front end.
    assert!(Config::parse(GOOD, &env).unwrap().http.is_none());

    let bad = |token: &str, extra: &str| {
        let text = GOOD.replace(
            "password = \"env:ANALYST_PASSWORD\"",
            &format!("password = \"env:ANALYST_PASSWORD\"\ntoken = \"{token}\""),
        ) + extra;
        Config::parse(&text, &env).unwrap_err().to_string()
    };
    let e = bad("plain-text-token-value", "");
    assert!(
        e.contains("users[0].token") && e.contains("cleartext"),
        "{e}"
    );
    assert!(
        !e.contains("plain-text-token-value"),
        "the token is scrubbed: {e}"
    );
    assert!(bad("sha256:abc", "").contains("64 hexadecimal"));
    assert!(bad("env:UNSET_TOKEN", "").contains("UNSET_TOKEN is not set"));
    let e = bad(
        "env:ANALYST_PASSWORD",
        "[http]\nlisten = \"nowhere\"\nmax_body_kib = 0\n",
    );
    assert!(e.contains("shorter than 16"), "{e}");
    assert!(
        e.contains("http.listen") && e.contains("http.max_body_kib"),
        "{e}"
    );
}

#[test]
fn synthetic_rows_are_declared_per_table_with_defaults() {
    let text = format!("{GOOD}[tables.synthetic]\nepsilon = 1\nrefresh = \"7d\"\n");
    let c = Config::parse(&text, &env).unwrap();
    let s = c.table(None, "visits").unwrap().synthetic.clone().unwrap();
    assert_eq!(s.epsilon, 1.0);
    assert_eq!(s.rows, Synthetic::DEFAULT_ROWS);
    assert_eq!(s.bins, Synthetic::DEFAULT_BINS);
    assert_eq!(s.max_rows, Synthetic::DEFAULT_MAX_ROWS);
    assert_eq!(s.refresh, Some(std::time::Duration::from_secs(7 * 86_400)));
    let bad = format!("{GOOD}[tables.synthetic]\nepsilon = 0\nbins = 1\nrows = 0\n");
    let e = errors(&bad);
    for path in ["synthetic.epsilon", "synthetic.bins", "synthetic.rows"] {
        assert!(e.iter().any(|m| m.contains(path)), "{path}: {e:?}");
    }
    let public = GOOD.replace(
        "[[tables]]\nname = \"public.visits\"",
        "[[tables]]\nname = \"codes\"\npublic = true\n[tables.synthetic]\nepsilon = 1\n[[tables]]\nname = \"public.visits\"",
    );
    assert!(errors(&public)
        .iter()
        .any(|m| m.contains("public table needs no synthetic")));
    let reserved = GOOD.replace("name = \"analyst\"", "name = \"dpgate:synthetic\"");
    assert!(errors(&reserved)
        .iter()
        .any(|m| m.contains("synthetic-data fits")));
}
