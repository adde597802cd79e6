//! dpgate's SQL front end, with no I/O: parse and classify statements,
//! check private queries against the declared catalog, and plan the
//! bounded backend query and its release.

pub mod classify;
pub mod constant;
pub mod error;
pub mod params;
pub mod plan;
mod predicate;
mod resolve;

pub use classify::{classify, Command};
pub use error::{sqlstate, Refusal};
pub use plan::{plan, OutputColumn, OutputType, Plan};
pub use resolve::resolve_table;

#[cfg(test)]
mod tests;
pub use sqlparser::ast;
