//! Bound parameters of the extended protocol: their wire types (declared
//! by the client, else inferred by the front door) and their values.

use dpgate_config::ColumnType;
use dpgate_sql::Cell;
use dpgate_sql::{sqlstate, Refusal};
use pgwire::api::portal::Portal;
use pgwire::api::Type;
use pgwire::error::PgWireError;

use crate::wire::pg_type;

/// What the client declared for parameter `i`, unless unknown.
pub(crate) fn declared_type(declared: &[Option<Type>], i: usize) -> Option<Type> {
    declared
        .get(i)
        .cloned()
        .flatten()
        .filter(|t| *t != Type::UNKNOWN)
}

/// Parameter types of a private statement: what the client declared,
/// else inferred from the compared column, else text.
pub(crate) fn wire_types(inferred: &[Option<ColumnType>], declared: &[Option<Type>]) -> Vec<Type> {
    (0..inferred.len().max(declared.len()))
        .map(|i| {
            declared_type(declared, i).unwrap_or_else(|| {
                inferred
                    .get(i)
                    .copied()
                    .flatten()
                    .map(pg_type)
                    .unwrap_or(Type::TEXT)
            })
        })
        .collect()
}

/// Decodes a portal's bound values by the statement's parameter types.
pub(crate) fn decode<S: Clone>(portal: &Portal<S>, types: &[Type]) -> Result<Vec<Cell>, Refusal> {
    let bad = |e: PgWireError| {
        Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("a parameter could not be read: {e}"),
            "bind values of the parameter types the statement describes",
        )
    };
    (0..portal.parameter_len())
        .map(|i| {
            let ty = types.get(i).cloned().unwrap_or(Type::TEXT);
            let v = match ty {
                Type::INT2 => portal
                    .parameter::<i16>(i, &ty)
                    .map(|v| v.map(|v| Cell::Int(v.into()))),
                Type::INT4 => portal
                    .parameter::<i32>(i, &ty)
                    .map(|v| v.map(|v| Cell::Int(v.into()))),
                Type::INT8 => portal.parameter::<i64>(i, &ty).map(|v| v.map(Cell::Int)),
                Type::FLOAT4 => portal
                    .parameter::<f32>(i, &ty)
                    .map(|v| v.map(|v| Cell::Float(v.into()))),
                Type::FLOAT8 => portal.parameter::<f64>(i, &ty).map(|v| v.map(Cell::Float)),
                Type::BOOL => portal.parameter::<bool>(i, &ty).map(|v| v.map(Cell::Bool)),
                _ => portal
                    .parameter::<String>(i, &Type::TEXT)
                    .map(|v| v.map(Cell::Text)),
            };
            Ok(v.map_err(bad)?.unwrap_or(Cell::Null))
        })
        .collect()
}
