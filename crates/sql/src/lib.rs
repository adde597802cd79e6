//! dpgate's SQL front end, with no I/O: parse and classify statements,
//! check private queries against the declared catalog, plan the bounded
//! backend query and its release, and post-process released groups.

mod aggregate;
pub mod answer;
pub mod catalog;
pub mod classify;
pub mod collect;
pub mod constant;
pub mod dialect;
pub mod error;
pub mod explain;
mod expr;
mod front;
pub mod limits;
mod narrow;
pub mod params;
mod partial;
pub mod plan;
pub mod post;
mod resolve;
mod scope;
mod source;
pub mod synth;
pub mod target;
pub mod types;

pub use answer::{Answer, GroupRow, RawGroup};
pub use classify::{classify, Command};
pub use collect::{Collected, Collector, GroupSink};
pub use dialect::Dialect;
pub use error::{sqlstate, Refusal};
pub use front::{route, Prepared, Routed, Statement};
pub use plan::{
    plan, Ask, Bounding, Grouping, Mechanism, MechanismNote, OutputColumn, Plan, Split, Target,
    TargetMet,
};
pub use resolve::resolve_table;
pub use types::{quote_literal, Cell, OutputType, SqlType};

#[cfg(test)]
mod tests;
pub use sqlparser::ast;
