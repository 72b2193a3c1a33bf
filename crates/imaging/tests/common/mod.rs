//! Where the integration tests find the photos `darkroom models fetch` puts in the
//! Darkroom home: `samples/` (scikit-image) and `photos/camera/` (camera JPEGs).

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    let imaging = Path::new(env!("CARGO_MANIFEST_DIR"));
    imaging
        .ancestors()
        .nth(2)
        .expect("crates/imaging sits two levels below the workspace root")
        .to_path_buf()
}

/// `$DARKROOM_HOME`, else `var/` at the workspace root. A relative `$DARKROOM_HOME`
/// is taken from the workspace root (where scripts/test.sh runs), not from the
/// crate folder cargo runs tests in.
pub fn home() -> PathBuf {
    match std::env::var_os("DARKROOM_HOME") {
        Some(home) if !home.is_empty() => workspace().join(home),
        _ => workspace().join("var"),
    }
}

/// Reads a file the set-up step fetches. Missing photos fail loudly: a test that
/// skips proves nothing.
pub fn read_fetched(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "photo {} is missing ({e}): run `darkroom models fetch` first",
            path.display()
        )
    })
}
