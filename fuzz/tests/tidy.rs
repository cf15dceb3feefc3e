//! House rules checked under plain `cargo test`: every Rust file of warren-fuzz (its
//! library, tests, fuzz targets and recording helpers) opens with a `//!` line, and
//! none keeps `dbg!` or `todo!`.

use std::{fs, path::Path};

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_opens_with_a_doc_line_and_keeps_no_debug_leftovers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "libfuzzer/fuzz_targets", "record"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} must open with a //! line",
            file.display()
        );
        for banned in [concat!("dbg", "!("), concat!("todo", "!(")] {
            assert!(
                !text.contains(banned),
                "{} contains {banned}",
                file.display()
            );
        }
    }
}
