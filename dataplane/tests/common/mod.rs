//! Helpers shared by the fixture tests.

use std::path::PathBuf;

/// Checks that the fuzz seeds committed under `fuzz/seeds/<target>` are exactly `expected`
/// (name, bytes), and rewrites them first when `LINEN_WRITE_FUZZ_SEEDS` is set. A seed derived
/// from a fixture can then never go stale unnoticed.
pub fn check_fuzz_seeds(target: &str, expected: &[(String, Vec<u8>)]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    if std::env::var_os("LINEN_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in expected {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in expected {
        let on_disk = std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("fuzz seed {name}: {e}; regenerate with LINEN_WRITE_FUZZ_SEEDS=1 (see this test's docs)")
        });
        assert_eq!(
            &on_disk, bytes,
            "fuzz seed {name} is stale; regenerate with LINEN_WRITE_FUZZ_SEEDS=1"
        );
    }
    let count = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(count, expected.len(), "unexpected files in {}", dir.display());
}
