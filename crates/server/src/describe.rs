//! Describe of the extended protocol: the parameter types and result
//! columns of a routed statement, without running or charging it.

use dpgate_sql::constant::evaluate_constant;
use dpgate_sql::{Command, Refusal, Routed, Statement};
use pgwire::api::Type;

use crate::handler::QueryHandler;
use crate::params::wire_types;
use crate::report::{add_interval_columns, Accuracy};
use crate::statement::ClientSession;
use crate::wire::{constant_type, output_type, Fields};

impl QueryHandler {
    /// What one statement takes and returns.
    pub(crate) async fn describe_one(
        &self,
        info: &ClientSession,
        routed: &Routed,
        declared: &[Option<Type>],
    ) -> Result<(Vec<Type>, Fields), Refusal> {
        match &routed.statement {
            Statement::Catalog => self.describe_catalog(info, &routed.text, declared).await,
            // The shadow tables have the synthetic tables' columns.
            Statement::Synthetic {
                read,
                explain: false,
            } => self.describe_catalog(info, &read.sql, declared).await,
            Statement::Synthetic { explain: true, .. } => Ok((
                declared
                    .iter()
                    .map(|t| t.clone().unwrap_or(Type::TEXT))
                    .collect(),
                vec![("QUERY PLAN".into(), Type::TEXT)],
            )),
            Statement::Private(prepared) => {
                let types = wire_types(prepared.parameter_types(), declared);
                let plan = prepared.describe(&info.ctx.ask, &info.ctx.config)?;
                let mut fields: Fields = plan
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), output_type(c.ty)))
                    .collect();
                if info.session.lock().unwrap().accuracy() == Accuracy::Columns {
                    add_interval_columns(&plan.column_sources(), &mut fields, &mut [], &[]);
                }
                Ok((types, fields))
            }
            Statement::Explain(prepared) => Ok((
                wire_types(prepared.parameter_types(), declared),
                vec![("QUERY PLAN".into(), Type::TEXT)],
            )),
            Statement::Constant(items) => {
                let values = evaluate_constant(items, info)?;
                Ok((
                    vec![],
                    values
                        .iter()
                        .map(|(n, v)| (n.clone(), constant_type(v)))
                        .collect(),
                ))
            }
            Statement::Session(Command::Show(name)) if name == "all" => Ok((
                vec![],
                vec![("name".into(), Type::TEXT), ("setting".into(), Type::TEXT)],
            )),
            Statement::Session(Command::Show(name)) => {
                Ok((vec![], vec![(name.clone(), Type::TEXT)]))
            }
            Statement::Session(_) => Ok((vec![], vec![])),
            Statement::Refused(e) => Err(e.clone()),
        }
    }
}
