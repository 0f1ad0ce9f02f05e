//! Results: the matrix, the summary line, JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::client::Got;

/// One case on one engine.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub case: String,
    /// Spec section.
    pub spec: String,
    /// ABI.
    pub abi: String,
    /// ABI version (`http_handler` for http-wasm, `0.1.0`… for proxy-wasm).
    pub version: String,
    /// Engine.
    pub engine: String,
    /// Whether everything matched.
    pub passed: bool,
    /// What differed.
    pub mismatches: Vec<String>,
    /// What came back (absent when the request failed).
    pub got: Option<Got>,
    /// With `--profile NAME`: `NAME` when the case gave that host's answer rather than
    /// `expect`'s (then `passed` is true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaves_as: Option<String>,
}

/// Every result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Engines, in column order.
    pub engines: Vec<String>,
    /// Results, case by case, engine by engine.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// Passed results.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// Failed results.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Passed results that gave a profile host's answer rather than `expect`'s.
    pub fn behaved_as(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.behaves_as.is_some())
            .count()
    }

    /// `N passed, M failed`; with profile answers, `N passed (K behave as HOST), M failed`.
    pub fn summary(&self) -> String {
        let k = self.behaved_as();
        if k == 0 {
            return format!("{} passed, {} failed", self.passed(), self.failed());
        }
        let hosts: std::collections::BTreeSet<&str> = self
            .results
            .iter()
            .filter_map(|r| r.behaves_as.as_deref())
            .collect();
        let hosts: Vec<&str> = hosts.into_iter().collect();
        format!(
            "{} passed ({k} behave as {}), {} failed",
            self.passed(),
            hosts.join(", "),
            self.failed()
        )
    }

    /// Case name → engine → passed.
    pub fn matrix(&self) -> BTreeMap<String, BTreeMap<String, bool>> {
        let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        for r in &self.results {
            m.entry(r.case.clone())
                .or_default()
                .insert(r.engine.clone(), r.passed);
        }
        m
    }

    /// The matrix (cases by engine), then every failure's details, then the summary line.
    pub fn to_text(&self) -> String {
        let width = self
            .results
            .iter()
            .map(|r| r.case.len() + r.abi.len() + 1)
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!("{:width$}", "case");
        for e in &self.engines {
            let _ = write!(s, "  {e:9}");
        }
        s.push('\n');
        let mut seen = Vec::new();
        for r in &self.results {
            if seen.contains(&&r.case) {
                continue;
            }
            seen.push(&r.case);
            let _ = write!(s, "{:width$}", format!("{}/{}", r.abi, r.case));
            for e in &self.engines {
                let cell = self
                    .results
                    .iter()
                    .find(|x| x.case == r.case && &x.engine == e)
                    .map(|x| match (&x.behaves_as, x.passed) {
                        (Some(h), _) => format!("as {h}"),
                        (None, true) => "pass".to_string(),
                        (None, false) => "FAIL".to_string(),
                    })
                    .unwrap_or_else(|| "-".to_string());
                let _ = write!(s, "  {cell:9}");
            }
            s.push('\n');
        }
        for r in self.results.iter().filter(|r| !r.passed) {
            let _ = writeln!(s, "\nFAILED {} on {} ({})", r.case, r.engine, r.spec);
            for m in &r.mismatches {
                let _ = writeln!(s, "  {m}");
            }
            if let Some(g) = &r.got {
                let _ = writeln!(s, "  got status {}, headers {:?}", g.status, g.headers);
            }
        }
        s.push('\n');
        s += &self.summary();
        s.push('\n');
        s
    }

    /// JSON for machines: results, summary counts.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "engines": self.engines,
            "passed": self.passed(),
            "failed": self.failed(),
            "behaves_as": self.behaved_as(),
            "results": self.results,
        }))
        .unwrap_or_default()
    }
}
