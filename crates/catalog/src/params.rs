//! Parameters of catalog queries, passed on as the client sent them
//! (binary path) or as typed literals to `EXECUTE` (text path, where
//! results come back through the simple protocol as text).

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, Format, FromSql, IsNull, ToSql, Type};

use crate::forward::Param;
use crate::CatalogError;

/// A parameter forwarded byte for byte, in the client's format.
#[derive(Debug)]
pub(crate) struct Raw<'a>(pub &'a Param);

impl ToSql for Raw<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0.value {
            None => Ok(IsNull::Yes),
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        if self.0.binary {
            Format::Binary
        } else {
            Format::Text
        }
    }

    to_sql_checked!();
}

/// A result value kept as the bytes PostgreSQL sent (binary format).
pub(crate) struct RawValue(pub Vec<u8>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw.to_vec()))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// The SQL literal for parameter `p` of type `ty`: `'text'::"schema"."type"`.
pub(crate) fn literal(p: &Param, ty: &Type) -> Result<String, CatalogError> {
    let Some(bytes) = &p.value else {
        return Ok("NULL".into());
    };
    let text = if p.binary {
        binary_to_text(bytes, ty)?
    } else {
        String::from_utf8(bytes.clone())
            .map_err(|_| CatalogError::Parameter("a text parameter is not UTF-8".into()))?
    };
    Ok(format!(
        "{}::{}",
        dpgate_sql::quote_literal(&text),
        crate::forward::type_name(ty)
    ))
}

fn binary_to_text(raw: &[u8], ty: &Type) -> Result<String, CatalogError> {
    fn decode<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> Result<T, CatalogError> {
        T::from_sql(ty, raw).map_err(|e| CatalogError::Parameter(e.to_string()))
    }
    fn array<T: ToString>(items: Vec<Option<T>>) -> String {
        let inner: Vec<String> = items
            .into_iter()
            .map(|i| match i {
                None => "NULL".into(),
                Some(v) => format!(
                    "\"{}\"",
                    v.to_string().replace('\\', "\\\\").replace('"', "\\\"")
                ),
            })
            .collect();
        format!("{{{}}}", inner.join(","))
    }
    Ok(match *ty {
        Type::BOOL => decode::<bool>(ty, raw)?.to_string(),
        Type::INT2 => decode::<i16>(ty, raw)?.to_string(),
        Type::INT4 => decode::<i32>(ty, raw)?.to_string(),
        Type::INT8 => decode::<i64>(ty, raw)?.to_string(),
        Type::OID | Type::REGCLASS | Type::REGTYPE | Type::REGPROC => {
            decode::<u32>(&Type::OID, raw)?.to_string()
        }
        Type::FLOAT4 => decode::<f32>(ty, raw)?.to_string(),
        Type::FLOAT8 => decode::<f64>(ty, raw)?.to_string(),
        Type::TEXT | Type::NAME | Type::VARCHAR | Type::BPCHAR | Type::CHAR | Type::UNKNOWN => {
            String::from_utf8(raw.to_vec())
                .map_err(|_| CatalogError::Parameter("a text parameter is not UTF-8".into()))?
        }
        Type::INT2_ARRAY => array(decode::<Vec<Option<i16>>>(ty, raw)?),
        Type::INT4_ARRAY => array(decode::<Vec<Option<i32>>>(ty, raw)?),
        Type::INT8_ARRAY => array(decode::<Vec<Option<i64>>>(ty, raw)?),
        Type::OID_ARRAY => array(decode::<Vec<Option<u32>>>(ty, raw)?),
        Type::TEXT_ARRAY | Type::NAME_ARRAY | Type::VARCHAR_ARRAY => {
            array(decode::<Vec<Option<String>>>(ty, raw)?)
        }
        _ => {
            return Err(CatalogError::Parameter(format!(
            "a binary parameter of type {} cannot be passed to a catalog query with text results",
            ty.name()
        )))
        }
    })
}
