//! Row-level SELECTs over tables with synthetic rows: the fit is found or
//! made (charged once to the dataset budget, never to the analyst), its
//! rows loaded into the catalog cluster's synthetic database, and the
//! query run there; every answer carries a NOTICE saying what the rows
//! are. EXPLAIN says the same without fitting anything.

use dpgate_sql::synth::SyntheticRead;
use dpgate_sql::Cell;
use pgwire::api::results::{Response, Tag};
use pgwire::api::Type;

use crate::handler::{Bound, QueryHandler};
use crate::statement::ClientSession;
use crate::wire::Outcome;
use dpgate_catalog::Database;

impl QueryHandler {
    /// Answers a row-level SELECT from synthetic rows (or explains it).
    pub(crate) async fn synthetic(
        &self,
        info: &ClientSession,
        read: &SyntheticRead,
        explain: bool,
        bound: Bound<'_>,
    ) -> Outcome {
        if explain {
            return match self.service().explain_synthetic(&info.ctx, read).await {
                Ok(lines) => Outcome::Rows {
                    fields: vec![("QUERY PLAN".into(), Type::TEXT)],
                    rows: lines.into_iter().map(|l| vec![Cell::Text(l)]).collect(),
                    notice: None,
                },
                Err(e) => Outcome::Error(e),
            };
        }
        let notices = match self.service().load_synthetic(&info.ctx, read).await {
            Ok(n) => n,
            Err(e) => return Outcome::Error(e),
        };
        match self
            .forward(info, &read.sql, bound, Database::Synthetic)
            .await
        {
            Ok(rows) if rows.columns.is_empty() => {
                Outcome::Tag(Response::Execution(Tag::new(&rows.tag)))
            }
            Ok(rows) => Outcome::Encoded {
                fields: rows.columns,
                rows: rows.rows,
                notice: Some(notices.join("\n")),
            },
            Err(e) => Outcome::Error(e),
        }
    }
}
