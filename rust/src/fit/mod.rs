//! The fitting engine: power laws of the optimal hyperparameters (OLS or Huber by IRLS,
//! bootstrap over rows or cells) and the Chinchilla loss law (Huber in log space by
//! L-BFGS from a grid of starts). Pure Rust, no Python.
pub mod bootstrap;
pub mod chinchilla;
pub mod lbfgs;
pub mod linear;
pub mod rng;
