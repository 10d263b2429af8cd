//! The Rust examples cannot drift: docs/embedding.md's Rust block is `tests/embedding.rs`
//! byte for byte (which cargo compiles and runs), its `[dev-dependencies]` block names every
//! crate that file uses, at paths that hold them, and every code line of the README's short
//! Rust quick start is a line of that file.

const README: &str = include_str!("../../README.md");
const EMBEDDING_DOC: &str = include_str!("../../docs/embedding.md");
const EMBEDDING: &str = include_str!("embedding.rs");

/// The fenced blocks of a Markdown text, as (language, body).
fn blocks(text: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut blocks = Vec::new();
    let mut parts = text.split("```");
    parts.next();
    while let (Some(block), _) = (parts.next(), parts.next()) {
        let (lang, body) = block.split_once('\n').expect("a fence line");
        blocks.push((lang, body));
    }
    blocks
}

/// The Rust block is tests/embedding.rs, byte for byte.
#[test]
fn readme_rust_block_is_the_embedding_test() {
    let rust: Vec<_> = blocks(EMBEDDING_DOC)
        .into_iter()
        .filter(|(lang, _)| *lang == "rust")
        .collect();
    assert_eq!(rust.len(), 1, "one Rust block");
    assert_eq!(
        rust[0].1, EMBEDDING,
        "docs/embedding.md and generator/tests/embedding.rs differ: copy the file into the page"
    );
}

/// The [dev-dependencies] block of docs/embedding.md names every crate the test uses (paths relative to a
/// clone of this repository at ../trace-gen), and tokio with the features it needs.
#[test]
fn readme_dev_dependencies_cover_the_test() {
    let toml: Vec<_> = blocks(EMBEDDING_DOC)
        .into_iter()
        .filter(|(lang, _)| *lang == "toml")
        .collect();
    assert_eq!(toml.len(), 1, "one toml block");
    let toml = toml[0].1;
    assert!(toml.contains("[dev-dependencies]\n"), "{toml}");
    let deps: Vec<(&str, &str)> = toml.lines().filter_map(|l| l.split_once(" = ")).collect();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for krate in ["trace_gen", "trace_sink", "trace_proto", "tokio"] {
        let used = EMBEDDING.contains(&format!("{krate}::"));
        let name = krate.replace('_', "-");
        let spec = deps.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        assert_eq!(used, spec.is_some(), "{name}: used {used}, listed {spec:?}");
        if let Some(path) = spec.and_then(|s| s.split("path = \"../trace-gen/").nth(1)) {
            let dir = path.split('"').next().unwrap();
            let manifest = std::fs::read_to_string(format!("{repo}/{dir}/Cargo.toml"))
                .unwrap_or_else(|e| panic!("{name}: {dir}: {e}"));
            assert!(manifest.contains(&format!("name = \"{name}\"")), "{dir}");
        }
    }
    let tokio = deps.iter().find(|(k, _)| *k == "tokio").unwrap().1;
    // #[tokio::test] needs macros and a runtime; TcpListener needs net.
    for feature in ["\"macros\"", "\"rt\"", "\"net\""] {
        assert!(tokio.contains(feature), "tokio lacks {feature}: {tokio}");
    }
}

/// The README's Rust quick start is an excerpt of the test: each of its lines, comments
/// aside, is a line of tests/embedding.rs (indentation aside).
#[test]
fn readme_rust_quick_start_is_an_excerpt_of_the_test() {
    let rust: Vec<_> = blocks(README)
        .into_iter()
        .filter(|(lang, _)| *lang == "rust")
        .collect();
    assert_eq!(rust.len(), 1, "one Rust block in the README");
    let test_lines: Vec<&str> = EMBEDDING.lines().map(str::trim).collect();
    let mut checked = 0;
    for line in rust[0].1.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        assert!(
            test_lines.contains(&line),
            "README Rust line not in generator/tests/embedding.rs: {line}"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "the README's Rust block has only {checked} code lines"
    );
}
