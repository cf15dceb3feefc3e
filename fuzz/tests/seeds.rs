//! The generated seed corpora and dictionary in `fuzz/seeds/` match what
//! `warren_fuzz::seeds` builds today. Refresh them after changing seeds.rs with
//! `WARREN_FUZZ_BLESS=1 cargo test -p warren-fuzz --test seeds`.

use std::path::PathBuf;

use warren_fuzz::seeds;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

#[test]
fn generated_seeds_and_dictionary_are_current() {
    let bless = std::env::var_os("WARREN_FUZZ_BLESS").is_some();
    let mut files = vec![(dir().join("amqp.dict"), seeds::dictionary().into_bytes())];
    for (target, name, bytes) in seeds::all() {
        files.push((dir().join(target).join(name), bytes));
    }
    let mut stale = Vec::new();
    for (path, bytes) in files {
        if std::fs::read(&path).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale seeds (run WARREN_FUZZ_BLESS=1 cargo test -p warren-fuzz --test seeds): {stale:?}"
    );
}
