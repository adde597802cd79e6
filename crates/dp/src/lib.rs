//! dpgate's privacy core: exact samplers, mechanisms with their privacy
//! maps, accounting, partition selection and release plans. No I/O;
//! everything here is a pure function of its inputs and a
//! cryptographically secure RNG.

pub mod accounting;
pub mod gaussian;
pub mod grid;
pub mod laplace;
pub mod mst;
pub mod noise;
pub mod output;
pub mod partition;
pub mod rational;
pub mod release;
pub mod samplers;
pub mod selection;
pub mod sensitivity;
pub mod split;

pub use gaussian::DiscreteGaussian;
pub use grid::Grid;
pub use laplace::{DiscreteLaplace, MechanismError};
pub use noise::Noise;
pub use rational::Rational;
pub use samplers::{secure_rng, SecureRng};
