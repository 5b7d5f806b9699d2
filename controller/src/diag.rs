//! Diagnostics in the form editors and CI annotate:
//! `path:line:col: error|warning: message`.

use std::fmt;
use std::sync::Arc;

use crate::yaml::Pos;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The manifests are invalid; nothing is rendered.
    Error,
    /// Suspicious but allowed.
    Warning,
}

/// One problem, pointing at a file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path relative to the manifests root, `/`-separated.
    pub file: Arc<str>,
    /// Where in the file.
    pub pos: Pos,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

/// Every problem found, in the order found; [`Diagnostics::sorted`] orders
/// them by file and line.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The closing line `validate` prints: `1 error, 2 warnings in 8 files`.
    pub fn summary(&self, files: usize) -> String {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        format!(
            "{} error{}, {} warning{} in {files} file{}",
            self.errors(),
            plural(self.errors()),
            self.warnings(),
            plural(self.warnings()),
            plural(files)
        )
    }

    /// Records an error.
    pub fn error(&mut self, file: &Arc<str>, pos: Pos, message: impl Into<String>) {
        self.push(file, pos, Severity::Error, message.into());
    }

    /// Records a warning.
    pub fn warning(&mut self, file: &Arc<str>, pos: Pos, message: impl Into<String>) {
        self.push(file, pos, Severity::Warning, message.into());
    }

    fn push(&mut self, file: &Arc<str>, pos: Pos, severity: Severity, message: String) {
        self.0.push(Diagnostic {
            file: file.clone(),
            pos,
            severity,
            message,
        });
    }

    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.0
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    /// Whether any error was found.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sorted by file, line, column; duplicates removed.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            (&a.file, a.pos, a.severity, &a.message).cmp(&(&b.file, b.pos, b.severity, &b.message))
        });
        self.0.dedup();
        self
    }

    /// Appends another set.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}
