//! `Store::remove` (`steplaw-db rm`): runs leave the store in one commit; their points stay in
//! their segments, dead, until the next `compact` rewrites them.
use std::path::Path;
use std::time::Duration;

use super::Store;
use crate::error::{Error, Result};
use crate::model::{RunId, RunRecord};

/// Which runs to remove: a run matching any of these goes.
#[derive(Debug, Clone, Default)]
pub struct RemoveSelection {
    /// Run names, exact or glob patterns (`*`, `?`).
    pub names: Vec<String>,
    /// Source paths: a run whose source is this path or lies below it. Relative paths are
    /// taken from the current directory.
    pub sources: Vec<String>,
    pub run_ids: Vec<RunId>,
    /// Runs whose source (directory or file) no longer exists.
    pub missing_source: bool,
}

impl RemoveSelection {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.sources.is_empty() && self.run_ids.is_empty() && !self.missing_source
    }
}

#[derive(Debug, Clone, Default)]
pub struct RemoveReport {
    /// The runs removed (or, with `dry_run`, that would be): id, name, source.
    pub removed: Vec<(RunId, String, String)>,
    /// The store's version afterwards (unchanged if nothing was committed).
    pub version: u64,
    pub committed: bool,
}

/// `*` any run of characters, `?` one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A source path as the store spells sources: absolute, symlinks resolved where it exists.
fn normalise(source: &str) -> String {
    let p = Path::new(source);
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| source.to_string())
        .trim_end_matches('/')
        .to_string()
}

fn below(source: &str, prefix: &str) -> bool {
    source == prefix
        || source
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('#'))
}

fn source_gone(source: &str) -> bool {
    !(Path::new(source).exists() || source.rsplit_once('#').is_some_and(|(p, _)| Path::new(p).exists()))
}

impl RemoveSelection {
    fn matches(&self, r: &RunRecord, prefixes: &[String]) -> bool {
        self.run_ids.contains(&r.run_id)
            || self.names.iter().any(|n| glob_match(n, &r.name))
            || prefixes.iter().any(|p| below(&r.source, p))
            || (self.missing_source && source_gone(&r.source))
    }
}

impl Store {
    /// Remove the runs `sel` selects in one commit (nothing committed when none matches or
    /// `dry_run`). Their points stay in their segments, unreferenced, until the next `compact`.
    pub fn remove(&self, sel: &RemoveSelection, dry_run: bool, wait: Duration) -> Result<RemoveReport> {
        if sel.is_empty() {
            return Err(Error::Invalid(
                "rm: say which runs (names or globs, --source PATH, --id RUN_ID, --missing-source)".into(),
            ));
        }
        let prefixes: Vec<String> = sel.sources.iter().map(|s| normalise(s)).collect();
        let select = |runs: &[RunRecord]| -> Vec<(RunId, String, String)> {
            runs.iter()
                .filter(|r| sel.matches(r, &prefixes))
                .map(|r| (r.run_id, r.name.clone(), r.source.clone()))
                .collect()
        };
        if dry_run {
            let m = self.latest()?;
            return Ok(RemoveReport {
                removed: select(&m.runs),
                version: m.version,
                committed: false,
            });
        }
        let tx = self.begin(wait)?;
        let removed = select(&tx.base.runs);
        let version = tx.base.version;
        if removed.is_empty() {
            return Ok(RemoveReport {
                removed,
                version,
                committed: false,
            });
        }
        let gone: std::collections::HashSet<RunId> = removed.iter().map(|r| r.0).collect();
        let runs: Vec<RunRecord> = tx
            .base
            .runs
            .iter()
            .filter(|r| !gone.contains(&r.run_id))
            .cloned()
            .collect();
        let m = tx.commit(runs)?;
        Ok(RemoveReport {
            removed,
            version: m.version,
            committed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("lr*_bs64", "lr1e-3_bs64"));
        assert!(glob_match("run?", "run7"));
        assert!(!glob_match("run?", "run17"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(below("/a/b/c", "/a/b") && below("/a/b#2", "/a/b") && !below("/a/bc", "/a/b"));
    }
}
