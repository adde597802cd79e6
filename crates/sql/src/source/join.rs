//! Joins: private tables on their shared privacy unit, and private with
//! public lookup tables; the joined source's unit and per-unit row bound.

use sqlparser::ast::{Expr, Join, JoinConstraint, JoinOperator};

use super::{Source, UnitType};
use crate::error::{sqlstate, Refusal};
use crate::expr::compile;
use crate::scope::Scope;

/// Joins two sources: private with private on the shared privacy unit,
/// or private with public on any row-level condition.
pub(super) fn join_sources(left: Source, right: Source, join: &Join) -> Result<Source, Refusal> {
    let (kind, constraint) = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => ("JOIN", c),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => ("LEFT JOIN", c),
        other => {
            let what = format!("{other:?}");
            let what = what.split('(').next().unwrap_or("this join").to_string();
            return Err(Refusal::unsupported(
                format!("{what} joins are not supported"),
                "use JOIN or LEFT JOIN with the private table on the left",
            ));
        }
    };
    let mut scope = left.scope.clone();
    // A LEFT JOIN gives unmatched left rows NULLs on the right, whatever
    // the right table declares.
    scope
        .columns
        .extend(right.scope.columns.iter().cloned().map(|mut c| {
            if kind == "LEFT JOIN" {
                c.typed.not_null = false;
            }
            c
        }));
    let on = match constraint {
        JoinConstraint::On(e) => e.clone(),
        JoinConstraint::Using(cols) => {
            let mut conds = Vec::new();
            let mut unit_match = false;
            for c in cols {
                let id = Expr::Identifier(crate::classify::object_name(c).as_str().into());
                let (l, r) = (
                    &left.scope.lookup(&id)?.typed,
                    &right.scope.lookup(&id)?.typed,
                );
                unit_match |= l.is_unit && r.is_unit;
                conds.push(format!("{} = {}", l.sql, r.sql));
            }
            return finish_join(left, right, scope, kind, conds.join(" AND "), unit_match);
        }
        _ => {
            return Err(Refusal::unsupported(
                "joins need an ON or USING condition",
                "write JOIN t ON a.patient_id = t.patient_id",
            ))
        }
    };
    let cond = compile(&on, &scope)?;
    let unit_match = unit_equality(&on, &scope, &left, &right);
    finish_join(left, right, scope, kind, cond.sql, unit_match)
}

/// Whether a top-level conjunct of `on` equates the two sides' units.
fn unit_equality(on: &Expr, scope: &Scope, left: &Source, right: &Source) -> bool {
    match on {
        Expr::BinaryOp {
            left: a,
            op: sqlparser::ast::BinaryOperator::And,
            right: b,
        } => unit_equality(a, scope, left, right) || unit_equality(b, scope, left, right),
        Expr::Nested(inner) => unit_equality(inner, scope, left, right),
        Expr::BinaryOp {
            left: a,
            op: sqlparser::ast::BinaryOperator::Eq,
            right: b,
        } => {
            let (Ok(a), Ok(b)) = (compile(a, scope), compile(b, scope)) else {
                return false;
            };
            let is = |t: &crate::types::Typed, s: &Source| {
                s.unit.as_deref() == Some(t.sql.as_str())
                    || (t.is_unit && s.scope.columns.iter().any(|c| c.typed.sql == t.sql))
            };
            (is(&a, left) && is(&b, right)) || (is(&b, left) && is(&a, right))
        }
        _ => false,
    }
}

fn finish_join(
    left: Source,
    right: Source,
    scope: Scope,
    kind: &str,
    cond: String,
    unit_match: bool,
) -> Result<Source, Refusal> {
    let from_sql = format!("{} {kind} {} ON {cond}", left.from_sql, right.from_sql);
    let (unit, max_rows) = match (&left.unit, &right.unit) {
        (Some(_), Some(_)) => {
            if left.row_level || right.row_level || !unit_match {
                return Err(Refusal::unsupported(
                    "private tables can only be joined on their shared privacy unit",
                    "join on the privacy unit columns, e.g. ON v.patient_id = p.patient_id",
                ));
            }
            unit_types_agree(&left, &right)?;
            let max_rows = left.max_rows.saturating_mul(right.max_rows);
            if max_rows > u64::from(dpgate_config::MAX_ROWS_PER_UNIT) {
                return Err(Refusal::new(
                    sqlstate::STATEMENT_TOO_COMPLEX,
                    format!(
                        "this join can give one person {max_rows} rows (the product of the tables' max_rows_per_unit); dpgate's limit is {}",
                        dpgate_config::MAX_ROWS_PER_UNIT
                    ),
                    "join fewer private tables, or filter in a subquery before joining",
                ));
            }
            (left.unit.clone(), max_rows)
        }
        (Some(_), None) => (left.unit.clone(), left.max_rows),
        (None, Some(_)) if kind == "JOIN" => (right.unit.clone(), right.max_rows),
        (None, Some(_)) => {
            return Err(Refusal::unsupported(
                "a LEFT JOIN from a public table to a private one would release public rows that match no person",
                "put the private table first: FROM visits v LEFT JOIN wards w ON ...",
            ))
        }
        (None, None) => (None, 0),
    };
    // Two sides of one row per unit, joined on the unit, keep one row
    // per unit (1 × 1); a public side can repeat rows.
    let one_row_per_unit =
        left.one_row_per_unit && right.one_row_per_unit && right.unit.is_some() && unit_match;
    // Two bounded private sides joined on the unit stay bounded (by the
    // product); a public side may repeat a unit's rows.
    let units_bounded = left.units_bounded
        && right.units_bounded
        && left.unit.is_some()
        && right.unit.is_some()
        && unit_match;
    Ok(Source {
        from_sql,
        scope,
        unit,
        max_rows,
        one_row_per_unit,
        units_bounded,
        row_level: false,
        rereadable: false,
        unit_type: left.unit_type.or(right.unit_type),
    })
}

/// Refuses a join on the unit whose two sides have privacy unit columns
/// of different kinds of type on the backend. Equality across kinds is
/// not one to one: bigints above 2⁵³ meet the same double, and SQLite
/// compares text `'01'` and `'1'` equal to the integer 1. Then one
/// person's rows could join several people's, and no bound would hold.
/// Within a kind (exact numbers, floating point, text, or one other
/// type) equality matches each value with at most one on the other side,
/// if both sides compare alike: a case-insensitive collation on one side
/// only makes its 'Bob' equal to the other side's 'Bob' and 'bob', two
/// people there; so the collation must be the same too.
fn unit_types_agree(left: &Source, right: &Source) -> Result<(), Refusal> {
    let (Some(l), Some(r)) = (&left.unit_type, &right.unit_type) else {
        return Ok(());
    };
    let unknown = |t: &UnitType| {
        t.name.is_none() || t.equality.as_deref() == Some(dpgate_config::UNKNOWN_EQUALITY)
    };
    if unknown(l) || unknown(r) {
        return Err(Refusal::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "the database does not say how it compares a privacy unit column joined here ({l} and {r}), so one person could match several"
            ),
            "join tables whose privacy unit is a column of a table with a declared type (not of an SQLite view, nor an ANY column), and see dpgate's log for the table it could not read",
        ));
    }
    let kinds = |t: &UnitType| (t.name.as_deref().map(unit_kind), t.equality.clone());
    if kinds(l) == kinds(r) {
        return Ok(());
    }
    Err(Refusal::new(
        sqlstate::DATATYPE_MISMATCH,
        format!(
            "the privacy unit columns joined here have different types or collations in the database ({l} and {r}), so one person could match several"
        ),
        "give the privacy unit columns the same type and collation in the database (e.g. both bigint, or both text with the default collation), then reload dpgate",
    ))
}

/// The kind of a unit type, as PostgreSQL names types: type modifiers
/// (`character varying(20)`, `numeric(10,0)`, `timestamp(3) with time
/// zone`) do not change it. `character(n)` (bpchar) ignores trailing
/// spaces when compared, even with `character varying`: 'P1' equals
/// 'P1 ' and 'P1  ', so it is a kind of its own, as an array of any
/// type is. Names are compared as written: `public."Unit"` and
/// `public."UNIT"` are two types.
fn unit_kind(ty: &str) -> String {
    let mut name = String::new();
    let mut depth = 0usize;
    for c in ty.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => name.push(c),
            _ => {}
        }
    }
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    match name.as_str() {
        "smallint" | "integer" | "bigint" | "numeric" => "exact number".into(),
        "real" | "double precision" => "floating point".into(),
        "text" | "character varying" => "text".into(),
        "character" | "bpchar" => "blank-padded text".into(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::unit_kind;

    /// Types whose equality is one to one within a kind share it;
    /// doubles, text, blank-padded text, arrays and other types are
    /// kinds of their own.
    #[test]
    fn unit_kinds() {
        for (a, b) in [
            ("integer", "bigint"),
            ("numeric(10,0)", "smallint"),
            ("text", "character varying(20)"),
            ("character(8)", "bpchar"),
            ("real", "double precision"),
            ("uuid", "uuid"),
            ("timestamp(3) with time zone", "timestamp with time zone"),
        ] {
            assert_eq!(unit_kind(a), unit_kind(b), "{a} {b}");
        }
        for (a, b) in [
            ("bigint", "double precision"),
            ("text", "bigint"),
            ("uuid", "text"),
            ("character(8)", "character varying(8)"),
            ("character(8)", "text"),
            ("character(4)[]", "character(4)"),
            ("text[]", "text"),
            (r#"public."UNIT""#, r#"public."Unit""#),
            ("timestamp with time zone", "timestamp without time zone"),
        ] {
            assert_ne!(unit_kind(a), unit_kind(b), "{a} {b}");
        }
    }
}
