//! Configuration errors that say where: file, line, column and config path.

use std::fmt;
use std::path::{Path, PathBuf};

/// One mistake in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The config path, e.g. `http.routers.my-router.service`; empty for the whole file.
    pub path: String,
    /// What is wrong, and what exists instead where that helps.
    pub message: String,
}

impl ConfigError {
    /// An error at `path` in `file`, position to be filled in by a [`super::locate::Locator`].
    pub fn at(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            position: None,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every mistake found in one pass, so the user fixes them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// "`x` does not exist; defined: a, b" — the names that do exist, for a dangling reference.
pub fn missing(
    kind: &str,
    name: &str,
    existing: impl IntoIterator<Item = impl AsRef<str>>,
) -> String {
    let names: Vec<String> = existing
        .into_iter()
        .map(|n| n.as_ref().to_string())
        .collect();
    if names.is_empty() {
        format!("{kind} {name:?} does not exist; no {kind}s are defined")
    } else {
        format!(
            "{kind} {name:?} does not exist; defined {kind}s: {}",
            names.join(", ")
        )
    }
}
