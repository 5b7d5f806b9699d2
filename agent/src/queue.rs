//! Reports that could not be sent, on disk under `state_dir/queue/`, one
//! file per report named by its sequence number (`<seq>.s.json` for a status
//! transition, `<seq>.m.json` for a routine heartbeat / metrics report).
//! Sent oldest first in batches; removed only after the controller's 2xx.
//!
//! Bounded: beyond `max` reports, routine reports are dropped oldest first
//! (every other one, so that the history thins out evenly instead of losing
//! its start); status transitions are dropped only when nothing else is
//! left.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use touchline_schemas::report::Report;

use crate::fsx;

/// The queue directory.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    max: usize,
}

fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (seq, kind) = name.strip_suffix(".json")?.split_once('.')?;
    Some((seq.parse().ok()?, kind == "s"))
}

impl Queue {
    /// On `dir`, holding at most `max` reports.
    pub fn new(dir: PathBuf, max: usize) -> Self {
        Self { dir, max }
    }

    /// Queued entries, oldest first: (seq, is_transition, file).
    fn entries(&self) -> Vec<(u64, bool, PathBuf)> {
        let mut out: Vec<(u64, bool, PathBuf)> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        parse_name(&name).map(|(s, t)| (s, t, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|e| e.0);
        out
    }

    /// The highest sequence waiting.
    pub fn last_seq(&self) -> Option<u64> {
        self.entries().last().map(|e| e.0)
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a report (durably), then trims the queue to its bound.
    pub fn push(&self, report: &Report, transition: bool) -> io::Result<()> {
        let name = format!(
            "{:020}.{}.json",
            report.seq,
            if transition { "s" } else { "m" }
        );
        let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
        fsx::write_atomic(&self.dir.join(name), &bytes)?;
        self.trim();
        Ok(())
    }

    fn trim(&self) {
        let entries = self.entries();
        let mut excess = entries.len().saturating_sub(self.max);
        if excess == 0 {
            return;
        }
        let mut removed = false;
        // Routine reports first, every other one from the oldest.
        for (_, transition, path) in entries.iter().filter(|e| !e.1).step_by(2) {
            if excess == 0 {
                break;
            }
            debug_assert!(!transition);
            if fs::remove_file(path).is_ok() {
                excess -= 1;
                removed = true;
            }
        }
        for (_, _, path) in &entries {
            if excess == 0 {
                break;
            }
            if path.exists() && fs::remove_file(path).is_ok() {
                excess -= 1;
                removed = true;
            }
        }
        if removed {
            let _ = fsx::sync_dir(&self.dir);
        }
    }

    /// The oldest reports, up to `n` of them and about `max_bytes` of JSON.
    pub fn peek(&self, n: usize, max_bytes: usize) -> Vec<(Report, PathBuf)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, _, path) in self.entries().into_iter().take(n) {
            let Ok(data) = fs::read(&path) else { continue };
            match serde_json::from_slice::<Report>(&data) {
                Ok(r) => {
                    bytes += data.len();
                    if bytes > max_bytes && !out.is_empty() {
                        break;
                    }
                    out.push((r, path));
                }
                Err(_) => {
                    // A report that does not decode cannot be sent; drop it.
                    let _ = fs::remove_file(&path);
                }
            }
        }
        out
    }

    /// Removes sent reports.
    pub fn remove(&self, paths: &[PathBuf]) {
        for p in paths {
            let _ = fs::remove_file(p);
        }
        if !paths.is_empty() {
            let _ = fsx::sync_dir(&self.dir);
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use touchline_schemas::report::{Phase, Status};

    fn report(seq: u64) -> Report {
        Report {
            seq,
            at: "2026-11-22T10:00:00Z".parse().unwrap(),
            status: Status {
                agent_release: None,
                phase: Phase::Converged,
                desired_serial: None,
                applied_serial: None,
                release: None,
                software: None,
                conditions: vec![],
                last_error: None,
                agent_version: None,
            },
            metrics: None,
        }
    }

    #[test]
    fn bounded_queue_keeps_transitions_and_thins_routine_reports() {
        let tmp = tempfile::tempdir().unwrap();
        let q = Queue::new(tmp.path().to_path_buf(), 16);
        for seq in 1..=40 {
            q.push(&report(seq), seq % 10 == 0).unwrap();
        }
        assert_eq!(q.len(), 16);
        let seqs: Vec<u64> = q.peek(100, usize::MAX).iter().map(|r| r.0.seq).collect();
        for t in [10, 20, 30, 40] {
            assert!(seqs.contains(&t), "transition {t} kept: {seqs:?}");
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
        assert_eq!(*seqs.last().unwrap(), 40, "the newest is kept");
        let batch = q.peek(5, usize::MAX);
        q.remove(&batch.iter().map(|b| b.1.clone()).collect::<Vec<_>>());
        assert_eq!(q.len(), 11);
    }
}
