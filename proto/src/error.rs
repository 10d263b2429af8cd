//! One way to print an error with its causes, for both binaries and libraries.

use std::error::Error;

/// `error: cause: cause ...`, skipping a cause whose text the line already
/// contains (hyper and tonic often repeat their source in their own message).
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_causes_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
        let e = Outer(std::io::Error::other("outer"));
        assert_eq!(chain(&e), "outer");
    }
}
