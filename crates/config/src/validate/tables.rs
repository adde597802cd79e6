//! `[[tables]]`: names, privacy units, contribution bounds, columns and
//! their types, bounds and domains.

use super::*;

/// Largest |bound| of an int column: 2^62, exact as a double and, after
/// any rounding of the bound, still inside bigint.
const INT_BOUND_MAX: f64 = 4_611_686_018_427_387_904.0;

/// A declared column or unit named like the rewrite's own columns.
fn refuse_reserved(c: &mut Collector, path: String, name: &str) {
    if crate::is_reserved_name(name) {
        c.err(
            path,
            format!(
                "names beginning with {} are reserved for dpgate's rewritten queries",
                crate::RESERVED_PREFIX
            ),
            "rename the column in the database, or expose it through a view under another name",
        );
    }
}

pub(super) fn validate_tables(c: &mut Collector, raw: Vec<RawTable>) -> Vec<Table> {
    let mut seen = HashSet::new();
    let mut tables = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let path = format!("tables[{i}]");
        let (schema, name) = match t.name.split_once('.') {
            Some((s, n)) => (s.to_string(), n.to_string()),
            None => ("public".to_string(), t.name.clone()),
        };
        if name.is_empty() || schema.is_empty() || name.contains('.') {
            c.err(
                format!("{path}.name"),
                format!("{:?} is not a table name", t.name),
                "write schema.table or table",
            );
        }
        if !seen.insert((schema.to_lowercase(), name.to_lowercase())) {
            c.err(
                format!("{path}.name"),
                format!("table {:?} is declared twice", t.name),
                "keep one declaration per table",
            );
        }
        let privacy = if t.public {
            if t.privacy_unit.is_some() || t.max_rows_per_unit.is_some() || t.privacy_unit_unique {
                c.err(
                    format!("{path}.public"),
                    "a public table has no privacy unit",
                    "remove privacy_unit, max_rows_per_unit and privacy_unit_unique, or public = true",
                );
            }
            TablePrivacy::Public
        } else {
            let k = t.max_rows_per_unit.unwrap_or(1);
            if k == 0 {
                c.err(
                    format!("{path}.max_rows_per_unit"),
                    "0 rows per unit would drop all data",
                    "write 1 or more",
                );
            } else if k > crate::MAX_ROWS_PER_UNIT {
                c.err(
                    format!("{path}.max_rows_per_unit"),
                    format!(
                        "{k} rows per unit is above dpgate's limit of {}: the noise would drown every answer",
                        crate::MAX_ROWS_PER_UNIT
                    ),
                    format!("write at most {}", crate::MAX_ROWS_PER_UNIT),
                );
            }
            if let Some(unit) = &t.privacy_unit {
                refuse_reserved(c, format!("{path}.privacy_unit"), unit);
            }
            if t.privacy_unit.as_deref() == Some("") {
                c.err(
                    format!("{path}.privacy_unit"),
                    "the privacy unit column is empty",
                    "name the column that identifies a person, or omit it for row-level privacy",
                );
            }
            if t.privacy_unit_unique {
                if t.privacy_unit.is_none() {
                    c.err(
                        format!("{path}.privacy_unit_unique"),
                        "privacy_unit_unique needs a privacy_unit column",
                        "name the unique column with privacy_unit, or remove privacy_unit_unique (a table without privacy_unit already has one row per unit)",
                    );
                } else if k != 1 {
                    c.err(
                        format!("{path}.max_rows_per_unit"),
                        format!("a unique privacy unit has one row per unit, not {k}"),
                        "remove max_rows_per_unit (or write 1), or remove privacy_unit_unique",
                    );
                }
            }
            TablePrivacy::Private {
                privacy_unit: t.privacy_unit.clone(),
                max_rows_per_unit: k.max(1),
                unique_unit: t.privacy_unit_unique,
            }
        };
        let mut columns = Vec::new();
        for (col_name, col) in t.columns {
            let cpath = format!("{path}.columns.{col_name}");
            refuse_reserved(c, cpath.clone(), &col_name);
            let Some(ty) = ColumnType::parse(&col.ty) else {
                c.err(
                    format!("{cpath}.type"),
                    format!("unknown type {:?}", col.ty),
                    "write int, float, text, bool, date or timestamp",
                );
                continue;
            };
            let bounds = match (col.lower, col.upper) {
                (Some(l), Some(u)) => {
                    if !ty.is_numeric() {
                        c.err(
                            &cpath,
                            format!("bounds are given for a {} column", col.ty),
                            "remove lower/upper; bounds apply to int and float columns",
                        );
                    } else if !(l.is_finite() && u.is_finite()) {
                        c.err(
                            &cpath,
                            "bounds must be finite numbers",
                            "write finite lower and upper values",
                        );
                    } else if l > u {
                        c.err(
                            &cpath,
                            format!("lower {l} is above upper {u}"),
                            "swap them or correct one of them",
                        );
                    } else if ty == ColumnType::Int && l.abs().max(u.abs()) > INT_BOUND_MAX {
                        // Clamped values are cast to bigint; a bound at 2^63
                        // (i64::MAX read as a double) would let a stored
                        // 2^63 through to a cast that fails, for that row only.
                        c.err(
                            &cpath,
                            format!("the bounds of an int column must lie within ±2^62 ({INT_BOUND_MAX}), so every clamped value fits a bigint"),
                            "narrow the bounds, or declare the column as float",
                        );
                    }
                    Some((l, u))
                }
                (None, None) => None,
                _ => {
                    c.err(
                        &cpath,
                        "only one of lower and upper is given",
                        "give both lower and upper",
                    );
                    None
                }
            };
            if let Some(values) = &col.values {
                if values.is_empty() {
                    c.err(
                        format!("{cpath}.values"),
                        "the domain is empty",
                        "list the possible values, or remove values",
                    );
                }
                // Each group is released once per query: two spellings of
                // one value would release the same group twice.
                let mut seen: Vec<(String, usize)> = Vec::new();
                for (i, v) in values.iter().enumerate() {
                    let Some(canon) = ty.canonical_value(v) else {
                        c.err(
                            format!("{cpath}.values[{i}]"),
                            format!("{v:?} is not a {} value", col.ty),
                            format!("write values of the column's type ({})", col.ty),
                        );
                        continue;
                    };
                    match seen.iter().find(|(s, _)| *s == canon) {
                        Some((_, first)) => c.err(
                            format!("{cpath}.values[{i}]"),
                            format!(
                                "{v:?} is the same value as values[{first}] ({:?})",
                                values[*first]
                            ),
                            "list each value once",
                        ),
                        None => seen.push((canon, i)),
                    }
                }
            }
            let is_unit = t
                .privacy_unit
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&col_name));
            if is_unit && (bounds.is_some() || col.values.is_some()) {
                // Bounds or a value list on the column that names people
                // would be public facts about who is in the data.
                c.err(
                    &cpath,
                    format!("\"{col_name}\" is the privacy unit; it may declare a type, but not bounds or values"),
                    "keep only `type` on the privacy unit column (or remove it from columns)",
                );
            }
            columns.push(Column {
                name: col_name,
                ty,
                bounds,
                values: col.values,
                not_null: col.not_null,
            });
        }
        if t.csv.as_deref().is_some_and(|p| p.trim().is_empty()) {
            c.err(
                format!("{path}.csv"),
                "the CSV file name is empty",
                "write the path of a CSV file with a header row, or remove csv",
            );
        }
        let backend_name = t.backend_name.map(|n| {
            let parts = dotted_name(&n).unwrap_or_default();
            if parts.is_empty() || parts.len() > 3 || parts.iter().any(String::is_empty) {
                c.err(
                    format!("{path}.backend_name"),
                    format!("{n:?} is not a Spark table name"),
                    "write catalog.database.table, database.table or table; quote a part holding dots with backticks, e.g. parquet.`/data/visits.parquet`",
                );
            }
            parts
        });
        let synthetic = t
            .synthetic
            .map(|s| validate_synthetic(c, &format!("{path}.synthetic"), s, &privacy));
        tables.push(Table {
            schema,
            name,
            privacy,
            columns,
            csv: t.csv.map(PathBuf::from),
            backend_name,
            synthetic,
            unit_type: None,
            unit_equality: None,
            stored: false,
        });
    }
    tables
}

/// The parts of a dotted name (`a.b.c`), a part in backticks taken as
/// written (``parquet.`/data/v.parquet` ``, with ``` `` ``` for a
/// backtick); `None` for an unclosed backtick.
fn dotted_name(name: &str) -> Option<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => parts.push(String::new()),
            '`' => loop {
                match chars.next()? {
                    '`' if chars.peek() == Some(&'`') => {
                        chars.next();
                        parts.last_mut()?.push('`');
                    }
                    '`' => break,
                    c => parts.last_mut()?.push(c),
                }
            },
            c => parts.last_mut()?.push(c),
        }
    }
    Some(parts)
}

/// `[tables.synthetic]`: a positive ε, sizes within dpgate's limits, and a
/// private table (a public one needs no stand-ins).
fn validate_synthetic(
    c: &mut Collector,
    path: &str,
    raw: RawSynthetic,
    privacy: &TablePrivacy,
) -> Synthetic {
    if matches!(privacy, TablePrivacy::Public) {
        c.err(
            path,
            "a public table needs no synthetic rows: its rows may be read as they are",
            "remove [tables.synthetic] from the public table",
        );
    }
    if !(raw.epsilon.is_finite() && raw.epsilon > 0.0 && raw.epsilon <= 100.0) {
        c.err(
            format!("{path}.epsilon"),
            format!("{} is not an ε between 0 and 100", raw.epsilon),
            "write the ε one fit may spend, e.g. epsilon = 1",
        );
    }
    let rows = raw.rows.unwrap_or(Synthetic::DEFAULT_ROWS);
    if !(1..=Synthetic::MAX_ROWS).contains(&rows) {
        c.err(
            format!("{path}.rows"),
            format!("{rows} rows is outside 1 to {}", Synthetic::MAX_ROWS),
            format!("write e.g. rows = {}", Synthetic::DEFAULT_ROWS),
        );
    }
    let bins = raw.bins.unwrap_or(Synthetic::DEFAULT_BINS);
    if !(2..=1000).contains(&bins) {
        c.err(
            format!("{path}.bins"),
            format!("{bins} bins per column is outside 2 to 1000"),
            format!("write e.g. bins = {}", Synthetic::DEFAULT_BINS),
        );
    }
    let max_rows = raw.max_rows.unwrap_or(Synthetic::DEFAULT_MAX_ROWS);
    if max_rows == 0 {
        c.err(
            format!("{path}.max_rows"),
            "0 rows per answer would show nothing",
            format!("write e.g. max_rows = {}", Synthetic::DEFAULT_MAX_ROWS),
        );
    }
    Synthetic {
        epsilon: raw.epsilon,
        rows,
        bins,
        max_rows: max_rows.min(rows),
        refresh: c.duration(&format!("{path}.refresh"), raw.refresh.as_deref()),
    }
}
