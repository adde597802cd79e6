//! dpgate's privacy core: exact samplers, mechanisms with their privacy
//! maps, and the budget split rule. No I/O; everything here is a pure
//! function of its inputs and a cryptographically secure RNG.

pub mod budget;
pub mod mechanism;
pub mod rational;
pub mod release;
pub mod samplers;

pub use mechanism::{DiscreteLaplace, Grid, MechanismError};
pub use rational::Rational;
pub use samplers::{secure_rng, SecureRng};
