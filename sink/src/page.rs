//! The page at `/` of the API port, for a person watching a verification: the
//! route matrix, loss and duplicates per generator, the check of the moment and
//! where agent nodes came from, drawn by the browser from `/stats` and `/check`.
//!
//! `page.html` is the whole page: one file with its CSS and JS inline, no
//! external asset and no build step, so it works offline. Its
//! Content-Security-Policy allows only that one inline style and script (by
//! their SHA-256, computed here from the file, so an edit cannot go stale) and
//! requests to the page's own origin.

use std::sync::LazyLock;

use base64::Engine;

/// The page, compiled into the binary.
pub const HTML: &str = include_str!("page.html");

/// The `Content-Security-Policy` header sent with [`HTML`].
pub fn content_security_policy() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            sha256(inline("script")),
            sha256(inline("style")),
        )
    });
    &CSP
}

/// The text of the page's one inline `<tag>` element (a unit test holds the
/// page to exactly one of each).
fn inline(tag: &str) -> &'static str {
    let open = format!("<{tag}>");
    let start = HTML.find(&open).map_or(0, |i| i + open.len());
    let end = HTML[start..]
        .find(&format!("</{tag}>"))
        .map_or(start, |i| start + i);
    &HTML[start..end]
}

/// A CSP hash source: `sha256-` and the base64 of the digest.
fn sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One inline style and one inline script, nothing loaded from elsewhere, no
    /// inline handler or style attribute (the policy would block them), a few KB.
    #[test]
    fn page_is_self_contained() {
        for tag in ["<style>", "</style>", "<script>", "</script>"] {
            assert_eq!(HTML.matches(tag).count(), 1, "{tag}");
        }
        for outside in [
            "http://", "https://", "src=", "<link", "@import", "url(", " style=", " on",
        ] {
            let found: Vec<_> = HTML.match_indices(outside).map(|(i, _)| i).collect();
            // " on" is allowed in text; only an attribute (" onclick=") is not.
            let bad = found.iter().any(|&i| {
                outside != " on"
                    || HTML[i + 1..]
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .next()
                        .is_some_and(|w| HTML[i + 1 + w.len()..].starts_with('='))
            });
            assert!(!bad, "the page uses {outside:?}");
        }
        assert!(HTML.len() < 16 * 1024, "{} bytes", HTML.len());
    }

    /// The policy carries the hashes of exactly the inline style and script.
    #[test]
    fn policy_hashes_the_inline_code() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        let script = &HTML[HTML.find("<script>").unwrap() + 8..HTML.find("</script>").unwrap()];
        assert!(script.contains("function drawMatrix"));
        assert!(
            csp.contains(&format!("script-src '{}'", sha256(script))),
            "{csp}"
        );
        // A known vector: SHA-256 of "abc".
        assert_eq!(
            sha256("abc"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
