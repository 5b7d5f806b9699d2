//! The bad-input corpora under `tests/data/`, read once for every test
//! that feeds them to the controller (over a socket or in process).

use std::path::PathBuf;

/// One bad report batch and the refusal it must get.
#[derive(Debug, Clone)]
pub struct BadReport {
    /// The case's file name.
    pub name: String,
    /// The body to post.
    pub body: Vec<u8>,
    /// The status it must get.
    pub status: u16,
    /// The `error` it must say.
    pub error: String,
    /// The `detail.field` it must name.
    pub field: String,
}

impl BadReport {
    /// `None` when the answer is the expected one, else what differs.
    pub fn mismatch(&self, status: u16, answer: &serde_json::Value) -> Option<String> {
        let got = (
            status,
            answer["error"].as_str(),
            answer["detail"]["field"].as_str(),
        );
        (got != (
            self.status,
            Some(self.error.as_str()),
            Some(self.field.as_str()),
        ))
            .then(|| {
                format!(
                    "{}: want {} {:?} {:?}, got {status} {answer}",
                    self.name, self.status, self.error, self.field
                )
            })
    }
}

/// Every case of `tests/data/bad-http/reports/` (`<case>.json` and its
/// `<case>.expect`: status, error, field), for `site`.
pub fn bad_reports(site: &str) -> Vec<BadReport> {
    let dir = crate::data("bad-http/reports");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "the corpus lost cases: {}", cases.len());
    cases
        .iter()
        .map(|case| {
            let body = std::fs::read_to_string(case).unwrap().replace("SITE", site);
            let expect = std::fs::read_to_string(case.with_extension("expect"))
                .unwrap()
                .replace("SITE", site);
            let mut lines = expect.lines();
            BadReport {
                name: case.file_name().unwrap().to_string_lossy().into_owned(),
                body: body.into_bytes(),
                status: lines.next().unwrap().parse().unwrap(),
                error: lines.next().unwrap().to_owned(),
                field: lines.next().unwrap().to_owned(),
            }
        })
        .collect()
}
