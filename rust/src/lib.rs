//! steplaw-db's core: log readers, the store, and (later) curves, cells and fits.
//! Free of Python: the bindings live in `py` behind the `python` feature.
pub mod cells;
pub mod curve;
pub mod error;
pub mod finals;
pub mod fit;
pub mod forecast;
pub mod ingest;
pub mod model;
pub mod numeric;
pub mod smooth;
pub mod store;

#[cfg(feature = "python")]
mod py;
