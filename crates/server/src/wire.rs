//! Framing outcomes for the wire: result rows in text or binary per
//! column, refusals as ErrorResponses, reports as NOTICEs.

use std::error::Error;
use std::sync::Arc;

use bytes::BytesMut;
use dpgate_sql::Cell;
use dpgate_sql::{OutputType, Refusal};
use futures::{stream, Sink, SinkExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response};
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};

/// Result columns: name and type.
pub(crate) type Fields = Vec<(String, Type)>;

/// What one statement produced, before it is framed for the wire.
pub(crate) enum Outcome {
    /// Rows of values dpgate computed (released answers, settings).
    Rows {
        fields: Fields,
        rows: Vec<Vec<Cell>>,
        notice: Option<String>,
    },
    /// Rows from the catalog cluster, already encoded per column format.
    Encoded {
        fields: Fields,
        rows: Vec<Vec<Option<Vec<u8>>>>,
        notice: Option<String>,
    },
    /// A command tag only.
    Tag(Response),
    /// A refusal or failure.
    Error(Refusal),
}

pub(crate) fn error_info(r: &Refusal, severity: &str) -> ErrorInfo {
    let mut info = ErrorInfo::new(severity.to_string(), r.code.to_string(), r.message.clone());
    if !r.hint.is_empty() {
        info.hint = Some(r.hint.clone());
    }
    info
}

/// Frames an outcome for the wire with per-column formats; returns the
/// notice to send before it.
pub(crate) fn to_response(outcome: Outcome, format: &Format) -> (Response, Option<String>) {
    match outcome {
        Outcome::Tag(r) => (r, None),
        Outcome::Error(e) => (Response::Error(Box::new(error_info(&e, "ERROR"))), None),
        Outcome::Rows {
            fields,
            rows,
            notice,
        } => {
            let schema = schema(fields, format);
            let encoded: Vec<PgWireResult<_>> = rows
                .into_iter()
                .map(|row| {
                    let mut enc = DataRowEncoder::new(schema.clone());
                    for (value, field) in row.iter().zip(schema.iter()) {
                        encode(&mut enc, value, field.datatype())?;
                    }
                    Ok(enc.take_row())
                })
                .collect();
            (
                Response::Query(QueryResponse::new(schema, stream::iter(encoded))),
                notice,
            )
        }
        Outcome::Encoded {
            fields,
            rows,
            notice,
        } => {
            let schema = schema(fields, format);
            let encoded: Vec<PgWireResult<_>> = rows
                .into_iter()
                .map(|row| {
                    let mut enc = DataRowEncoder::new(schema.clone());
                    for cell in row {
                        enc.encode_field(&Encoded(cell))?;
                    }
                    Ok(enc.take_row())
                })
                .collect();
            (
                Response::Query(QueryResponse::new(schema, stream::iter(encoded))),
                notice,
            )
        }
    }
}

fn schema(fields: Fields, format: &Format) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        fields
            .into_iter()
            .enumerate()
            .map(|(i, (name, ty))| FieldInfo::new(name, None, None, ty, format.format_for(i)))
            .collect(),
    )
}

fn encode(enc: &mut DataRowEncoder, value: &Cell, ty: &Type) -> PgWireResult<()> {
    match value {
        Cell::Null => enc.encode_field(&None::<String>),
        Cell::Int(i) if *ty == Type::INT4 => {
            enc.encode_field(&i32::try_from(*i).unwrap_or(i32::MAX))
        }
        Cell::Int(i) => enc.encode_field(i),
        Cell::Float(f) => enc.encode_field(f),
        Cell::Bool(b) => enc.encode_field(b),
        Cell::Text(t) => enc.encode_field(t),
    }
}

/// A cell the catalog database already encoded in the format asked for.
#[derive(Debug)]
struct Encoded(Option<Vec<u8>>);

impl Encoded {
    fn write(&self, out: &mut BytesMut) -> IsNull {
        match &self.0 {
            None => IsNull::Yes,
            Some(bytes) => {
                out.extend_from_slice(bytes);
                IsNull::No
            }
        }
    }
}

impl ToSql for Encoded {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        Ok(self.write(out))
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for Encoded {
    fn to_sql_text(
        &self,
        _: &Type,
        out: &mut BytesMut,
        _: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        Ok(self.write(out))
    }
}

/// The wire type of a declared column type.
pub(crate) fn pg_type(t: dpgate_config::ColumnType) -> Type {
    use dpgate_config::ColumnType::*;
    match t {
        Int => Type::INT8,
        Float => Type::FLOAT8,
        Text => Type::TEXT,
        Bool => Type::BOOL,
        Date => Type::DATE,
        Timestamp => Type::TIMESTAMP,
    }
}

/// The wire type of a constant.
pub(crate) fn constant_type(v: &Cell) -> Type {
    match v {
        Cell::Int(_) => Type::INT4,
        Cell::Float(_) => Type::FLOAT8,
        Cell::Bool(_) => Type::BOOL,
        Cell::Text(_) | Cell::Null => Type::TEXT,
    }
}

/// The wire type of a released column.
pub(crate) fn output_type(ty: OutputType) -> Type {
    match ty {
        OutputType::Int => Type::INT8,
        OutputType::Float => Type::FLOAT8,
        OutputType::Text => Type::TEXT,
        OutputType::Bool => Type::BOOL,
    }
}

/// Queues a NOTICE (sent with the next flush, before the rows).
pub(crate) async fn send_notice<C>(client: &mut C, text: Option<String>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if let Some(text) = text {
        let info = ErrorInfo::new("NOTICE".into(), "00000".into(), text);
        client
            .feed(PgWireBackendMessage::NoticeResponse(info.into()))
            .await?;
    }
    Ok(())
}
