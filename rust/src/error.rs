//! The one error type of the core. The Python binding maps each variant to a class of
//! the `steplaw_db.SteplawError` hierarchy.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// A log or table could not be understood.
    #[error("{location}: {message}")]
    Parse { location: String, message: String },

    /// The store is damaged or cannot be committed to.
    #[error("store {path}: {message}")]
    Store { path: PathBuf, message: String },

    /// Another process holds the store's write lock.
    #[error("store {path} is locked by another writer ({holder}); retry when it has finished")]
    Locked { path: PathBuf, holder: String },

    /// The caller asked for something that makes no sense (bad option, unknown field, ...).
    #[error("{0}")]
    Invalid(String),

    /// The call was well formed but the data cannot support it: too few cells or points for a
    /// law's coefficients, a regressor that does not vary (or regressors that vary together),
    /// a value a law cannot take the log of, a fit that fails from every start. More or other
    /// data would satisfy it, so callers can tell it from a bad option (the command line exits
    /// 1 for this, 2 for `Invalid`).
    #[error("{0}")]
    InsufficientData(String),

    /// A bug in steplaw-db (a worker panicked, an invariant broke): not the user's input.
    #[error("internal error (please report it): {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn parse(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Parse {
            location: location.into(),
            message: message.into(),
        }
    }
    pub fn store(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Store {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

impl Error {
    /// A Parquet error while reading or writing the file at `path`.
    pub fn parquet(path: impl AsRef<Path>, e: parquet::errors::ParquetError) -> Self {
        Error::store(path, format!("parquet: {e}"))
    }
}

/// `.at(path)`: a Parquet result whose error names the file it came from (there is no blanket
/// `From<ParquetError>`, which could not know the path).
pub trait ParquetResultExt<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> ParquetResultExt<T> for std::result::Result<T, parquet::errors::ParquetError> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::parquet(path, e))
    }
}
