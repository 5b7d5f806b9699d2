//! HTML escaping and URL encoding (askama's filters), for the pages, the SVG
//! built by hand and the alert emails.

/// HTML-escapes `s` (askama's escaper: also for SVG built by hand and the
/// alert emails).
pub fn escape(s: &str) -> String {
    askama::filters::escape(s, askama::filters::Html)
        .map(|e| e.to_string())
        .unwrap_or_default()
}

pub fn urlencode(s: &str) -> String {
    askama::filters::urlencode(s)
        .map(|e| e.to_string())
        .unwrap_or_default()
}
