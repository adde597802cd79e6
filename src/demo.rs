//! `dpgate demo`: a generated hospital served from an embedded SQLite
//! file, so a newcomer can query dpgate with psql without any database.
//!
//! The data is deterministic (the same seed gives the same files on every
//! machine and every version): 20 000 patients and 100 000 visits with
//! dates, wards, diagnoses, ages, costs and lengths of stay, written as
//! CSV next to the demo's proxy.toml, which loads them at start.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The demo's proxy.toml (the copy in examples/demo is the same file).
pub const CONFIG: &str = include_str!("../examples/demo/proxy.toml");

/// The demo's workload for `dpgate evaluate`.
pub const WORKLOAD: &str = include_str!("../examples/demo/workload.sql");

/// Patients generated.
pub const PATIENTS: u64 = 20_000;
/// Visits generated.
pub const VISITS: u64 = 100_000;

/// Most visits one patient has (the demo's `max_rows_per_unit`).
const MAX_VISITS: u8 = 10;

const SEED: u64 = 0x6470_6761_7465; // "dpgate"

/// Readies `dir` for serving: writes proxy.toml (and the workload for
/// `dpgate evaluate`) there if it has none,
/// and generates the CSV files the config names if they are missing.
/// Returns the config's path.
pub fn prepare(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("proxy.toml");
    if !config.exists() {
        std::fs::write(&config, CONFIG)?;
    }
    let workload = dir.join("workload.sql");
    if !workload.exists() {
        std::fs::write(&workload, WORKLOAD)?;
    }
    let patients = dir.join("data/patients.csv");
    let visits = dir.join("data/visits.csv");
    if !patients.exists() || !visits.exists() {
        eprintln!(
            "dpgate demo: generating {PATIENTS} patients and {VISITS} visits in {}",
            dir.join("data").display()
        );
        let people = generate_patients();
        write_atomically(&patients, |w| write_patients(w, &people))?;
        write_atomically(&visits, |w| write_visits(w, &people))?;
    }
    Ok(config)
}

/// What to print once the demo listens on `addr`.
pub fn banner(addr: SocketAddr, http: Option<SocketAddr>, config: &Path) -> String {
    let (host, port) = (addr.ip(), addr.port());
    let web = http
        .map(|h| {
            format!(
                "
Or open the console in a browser at http://{h}/ (analyst / demo), or ask over HTTP:

    curl -u analyst:demo -d '{{\"sql\": \"SELECT ward, COUNT(*) FROM visits GROUP BY ward\"}}' http://{h}/v1/query
"
            )
        })
        .unwrap_or_default();
    format!(
        "
dpgate demo is ready: a hospital with {PATIENTS} patients and {VISITS} visits.

Connect (password: demo):

    psql \"postgresql://analyst:demo@{host}:{port}/demo\"

and try:

    SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward;
    SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis ORDER BY 2 DESC;
    SELECT date_trunc('quarter', visit_date) AS quarter, AVG(length_of_stay) FROM visits GROUP BY 1 ORDER BY 1;
    SELECT p.region, AVG(v.cost) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.region;
    SET dp.epsilon = 0.5;  -- spend more per answer, for less noise
    EXPLAIN SELECT MEDIAN(age) FROM visits;  -- the plan and its cost, free
{web}
Every answer carries noise and a NOTICE with its cost and 95% intervals.
The analyst's budget is ε = 10; see it with
    dpgate budget show --config {config}
and start over with
    dpgate budget reset --user analyst --config {config}
As the data owner, test privacy, accuracy, utility and bias of 30 queries on the data:
    dpgate evaluate --config {config} --queries {workload} --report evaluate.html
Stop with Ctrl-C.
",
        config = config.display(),
        workload = config.with_file_name("workload.sql").display()
    )
}

/// SplitMix64: a tiny generator with a fixed definition, so the demo data
/// never changes with a dependency's version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        (self.unit() * n as f64) as u64
    }

    /// One of `items` with the given weights.
    fn pick<'a>(&mut self, items: &[(&'a str, f64)]) -> &'a str {
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut x = self.unit() * total;
        for (item, w) in items {
            if x < *w {
                return item;
            }
            x -= w;
        }
        items.last().expect("items").0
    }
}

struct Patient {
    sex: &'static str,
    birth_year: i64,
    region: &'static str,
    smoker: bool,
}

fn generate_patients() -> Vec<Patient> {
    let mut rng = Rng(SEED);
    (0..PATIENTS)
        .map(|_| {
            let sex = if rng.unit() < 0.51 { "F" } else { "M" };
            // Older people are more often patients.
            let birth_year = 2023 - (rng.unit().sqrt() * 93.0) as i64;
            let region = rng.pick(&[("north", 3.0), ("south", 2.5), ("east", 2.0), ("west", 1.5)]);
            let smoker = birth_year <= 2005 && rng.unit() < 0.18;
            Patient {
                sex,
                birth_year,
                region,
                smoker,
            }
        })
        .collect()
}

fn write_patients(w: &mut dyn Write, people: &[Patient]) -> io::Result<()> {
    writeln!(w, "patient_id,sex,birth_year,region,smoker")?;
    for (i, p) in people.iter().enumerate() {
        writeln!(
            w,
            "{},{},{},{},{}",
            i + 1,
            p.sex,
            p.birth_year,
            p.region,
            p.smoker
        )?;
    }
    Ok(())
}

/// Diagnoses per ward.
fn diagnoses(ward: &str) -> &'static [(&'static str, f64)] {
    match ward {
        "cardiology" => &[
            ("heart failure", 3.0),
            ("arrhythmia", 3.0),
            ("angina", 2.0),
            ("hypertension", 2.0),
        ],
        "oncology" => &[
            ("breast cancer", 2.0),
            ("lung cancer", 2.0),
            ("lymphoma", 1.0),
            ("colon cancer", 1.5),
        ],
        "orthopedics" => &[("fracture", 4.0), ("arthritis", 3.0), ("back pain", 2.0)],
        "maternity" => &[("delivery", 6.0), ("prenatal care", 3.0)],
        "pediatrics" => &[
            ("asthma", 3.0),
            ("bronchiolitis", 2.0),
            ("otitis", 3.0),
            ("fracture", 1.0),
        ],
        _ => &[
            ("injury", 4.0),
            ("chest pain", 2.0),
            ("infection", 3.0),
            ("asthma", 1.0),
            ("fracture", 2.0),
        ],
    }
}

fn write_visits(w: &mut dyn Write, people: &[Patient]) -> io::Result<()> {
    let mut rng = Rng(SEED ^ 0x7669_7369_7473); // "visits"
    writeln!(
        w,
        "visit_id,patient_id,visit_date,ward,diagnosis,age,cost,length_of_stay,readmitted"
    )?;
    // Each patient has at most MAX_VISITS visits, as proxy.toml declares
    // (max_rows_per_unit): a patient drawn again once full is redrawn, so
    // the declared bound holds and the demo's intervals cover the plain
    // answers (`dpgate evaluate` checks it).
    let mut visits_of = vec![0u8; PATIENTS as usize];
    for visit in 1..=VISITS {
        let id = loop {
            let id = rng.below(PATIENTS);
            if visits_of[id as usize] < MAX_VISITS {
                visits_of[id as usize] += 1;
                break id;
            }
        };
        let p = &people[id as usize];
        // 2023-01-01 is day 19358 since 1970-01-01; two years of visits.
        let day = 19_358 + rng.below(731) as i64;
        let (year, month, dom) = civil_from_days(day);
        let age = (year - p.birth_year).max(0);
        let ward = if age < 16 {
            "pediatrics"
        } else {
            let maternity = if p.sex == "F" && (18..=45).contains(&age) {
                2.0
            } else {
                0.0
            };
            let heart = if age > 55 { 3.0 } else { 1.0 };
            rng.pick(&[
                ("emergency", 4.0),
                ("cardiology", heart),
                ("oncology", if age > 45 { 1.5 } else { 0.4 }),
                ("orthopedics", 1.5),
                ("maternity", maternity),
            ])
        };
        let diagnosis = rng.pick(diagnoses(ward));
        let base = match ward {
            "cardiology" => 4200.0,
            "oncology" => 6500.0,
            "orthopedics" => 3600.0,
            "maternity" => 2800.0,
            "pediatrics" => 900.0,
            _ => 750.0,
        };
        let cost = base * (0.4 + rng.unit() + rng.unit() * rng.unit() * 1.5);
        let stay = match ward {
            "emergency" => rng.below(2),
            "pediatrics" => rng.below(4),
            _ => 1 + rng.below(5) + rng.below(6) * u64::from(age > 70),
        };
        let readmitted = rng.unit() < 0.05 + age as f64 / 1000.0;
        writeln!(
            w,
            "{visit},{},{year:04}-{month:02}-{dom:02},{ward},{diagnosis},{age},{cost:.2},{stay},{readmitted}",
            id + 1
        )?;
    }
    Ok(())
}

/// Year, month and day of `days` since 1970-01-01 (Howard Hinnant's
/// algorithm for the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `path` through a temporary file, so an interrupted run never
/// leaves half a file that the next run would take as complete.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let partial = path.with_extension("csv.partial");
    let mut w = BufWriter::new(File::create(&partial)?);
    fill(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_days_are_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_358), (2023, 1, 1));
        assert_eq!(civil_from_days(19_358 + 730), (2024, 12, 31));
        assert_eq!(civil_from_days(19_417), (2023, 3, 1));
    }

    #[test]
    fn the_data_is_the_same_every_time() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_patients(&mut a, &generate_patients()).unwrap();
        write_patients(&mut b, &generate_patients()).unwrap();
        assert_eq!(a, b);
        let text = String::from_utf8(a).unwrap();
        assert_eq!(text.lines().count() as u64, PATIENTS + 1);
    }
}
