//! The attack suite: one module per attack class an attack review found
//! (and the classes around them), each run against a table where the
//! attack would succeed if its defence were missing. Run with
//! `cargo test --release --test attacks`.

mod common;

#[path = "attacks/totality.rs"]
mod totality;

#[path = "attacks/catalog.rs"]
mod catalog;

#[path = "attacks/role.rs"]
mod role;

#[path = "attacks/protocol.rs"]
mod protocol;

#[path = "attacks/query_path.rs"]
mod query_path;

#[path = "attacks/units.rs"]
mod units;

#[path = "attacks/keys.rs"]
mod keys;

#[path = "attacks/neighbours.rs"]
mod neighbours;

#[path = "attacks/sampling.rs"]
mod sampling;
