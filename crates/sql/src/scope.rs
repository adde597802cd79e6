//! The columns a query can name: each visible column with its qualifier,
//! the SQL that reads it in the backend, and what dpgate knows about its
//! values (type, bounds, public domain, whether it identifies a person).

use dpgate_config::{quote_ident, Column};
use sqlparser::ast::Expr;

use crate::dialect::Dialect;
use crate::error::{sqlstate, Refusal};
use crate::types::{Range, SqlType, Typed};

/// One visible column.
#[derive(Clone, Debug)]
pub struct ScopeColumn {
    /// The table name or alias that qualifies it.
    pub qualifier: String,
    /// Its name.
    pub name: String,
    /// How it reads, with what is known about it.
    pub typed: Typed,
}

/// Everything a query's expressions may refer to.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Visible columns, in FROM order.
    pub columns: Vec<ScopeColumn>,
    /// The backend dialect expressions are rendered in.
    pub dialect: Dialect,
}

impl ScopeColumn {
    /// A declared column of a table read under `qualifier`.
    pub fn declared(qualifier: &str, column: &Column, dialect: Dialect) -> ScopeColumn {
        let ty = SqlType::from(column.ty);
        let domain = match (&column.values, ty) {
            (Some(values), _) => Some(values.iter().cloned().map(Some).collect()),
            (None, SqlType::Bool) => Some(vec![Some("true".into()), Some("false".into())]),
            _ => None,
        };
        let range = column
            .bounds
            .map(|(lo, hi)| match ty {
                SqlType::Int => Range::new(lo.ceil(), hi.floor().max(lo.ceil())),
                _ => Range::new(lo, hi),
            })
            .unwrap_or(Range::ALL);
        let mut sql = dialect.column(
            format!("{}.{}", quote_ident(qualifier), quote_ident(&column.name)),
            ty,
        );
        if matches!(ty, SqlType::Date | SqlType::Timestamp) {
            sql = dialect.guarded_date(&sql, ty);
        }
        ScopeColumn {
            qualifier: qualifier.to_string(),
            name: column.name.clone(),
            typed: Typed {
                sql,
                ty,
                range,
                domain,
                is_unit: false,
                column: true,
                literal: None,
                not_null: column.not_null,
            },
        }
    }

    /// The privacy unit column of a table read under `qualifier`.
    pub fn unit(qualifier: &str, name: &str, sql: String) -> ScopeColumn {
        ScopeColumn {
            qualifier: qualifier.to_string(),
            name: name.to_string(),
            typed: Typed {
                sql,
                ty: SqlType::Unknown,
                range: Range::ALL,
                domain: None,
                is_unit: true,
                column: true,
                literal: None,
                not_null: false,
            },
        }
    }
}

impl Scope {
    /// The column `expr` names (`col`, `t.col` or `schema.t.col`).
    pub fn lookup(&self, expr: &Expr) -> Result<&ScopeColumn, Refusal> {
        let (qualifier, name) = match expr {
            Expr::Identifier(i) => (None, i.value.as_str()),
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => (
                Some(parts[parts.len() - 2].value.as_str()),
                parts[parts.len() - 1].value.as_str(),
            ),
            other => {
                return Err(Refusal::unsupported(
                    format!("{other} is not a column"),
                    "name a declared column",
                ))
            }
        };
        let mut found = self.columns.iter().filter(|c| {
            c.name.eq_ignore_ascii_case(name)
                && qualifier.is_none_or(|q| c.qualifier.eq_ignore_ascii_case(q))
        });
        match (found.next(), found.next()) {
            (Some(c), None) => Ok(c),
            (Some(_), Some(_)) => Err(Refusal::new(
                sqlstate::AMBIGUOUS_COLUMN,
                format!("column reference \"{name}\" is ambiguous"),
                "qualify it with its table name or alias, e.g. v.age",
            )),
            (None, _) => Err(self.unknown(qualifier, name)),
        }
    }

    fn unknown(&self, qualifier: Option<&str>, name: &str) -> Refusal {
        if let Some(q) = qualifier {
            if !self
                .columns
                .iter()
                .any(|c| c.qualifier.eq_ignore_ascii_case(q))
            {
                let known: Vec<&str> = self.qualifiers();
                return Refusal::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("missing FROM-clause entry for table \"{q}\""),
                    format!("qualify columns with one of: {}", known.join(", ")),
                );
            }
        }
        let known: Vec<String> = self
            .columns
            .iter()
            .filter(|c| qualifier.is_none_or(|q| c.qualifier.eq_ignore_ascii_case(q)))
            .map(|c| c.name.clone())
            .collect();
        let owner = qualifier
            .map(|q| format!(" of \"{q}\""))
            .unwrap_or_default();
        Refusal::new(
            sqlstate::UNDEFINED_COLUMN,
            format!("column \"{name}\"{owner} does not exist or is not declared in proxy.toml"),
            format!("use one of the declared columns: {}", known.join(", ")),
        )
    }

    fn qualifiers(&self) -> Vec<&str> {
        let mut q: Vec<&str> = self.columns.iter().map(|c| c.qualifier.as_str()).collect();
        q.dedup();
        q
    }

    /// Mutable access to the column whose SQL is `sql` (for WHERE narrowing).
    pub fn by_sql_mut(&mut self, sql: &str) -> Option<&mut ScopeColumn> {
        self.columns.iter_mut().find(|c| c.typed.sql == sql)
    }
}
