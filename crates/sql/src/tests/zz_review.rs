use crate::{classify, plan, Command};
use dpgate_config::Config;

#[test]
fn zz_review_dump() {
    let cfg = std::fs::read_to_string("/tmp/review/config.toml").unwrap();
    let config = Config::parse(&cfg, &|_| Some("x".into())).unwrap();
    let qs = std::fs::read_to_string("/tmp/review/queries.txt").unwrap();
    let mut out = String::new();
    for q in qs.lines().filter(|l| !l.trim().is_empty()) {
        let r = match classify(q) {
            Ok(mut c) => match c.remove(0) {
                Command::Private(p) => match plan(&p, &config, 1.0) {
                    Ok(p) => format!("-- {:?}\n{};\n", p.bounding, p.backend_sql),
                    Err(e) => format!("-- REFUSED {e:?}\n"),
                },
                _ => "-- not private\n".into(),
            },
            Err(e) => format!("-- CLASSIFY ERR {e:?}\n"),
        };
        out.push_str(&format!("-- Q: {q}\n{r}\n"));
    }
    std::fs::write("/tmp/review/out.sql", out).unwrap();
}
