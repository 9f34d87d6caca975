//! Benchmark fixtures (criterion) and the `budget` runner's parts.

pub mod budget;
pub mod fixtures;

use std::path::{Path, PathBuf};

/// The relay binary a benchmark program runs: `given` (`--relay PATH`), else the one next to
/// the program (target/release/budget -> target/release/relay). Fails when it does not exist.
pub fn relay_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("relay"),
    };
    if !path.is_file() {
        anyhow::bail!(
            "no relay binary at {}: build it first with `cargo build --release -p relay` (or \
             pass --relay PATH)",
            path.display()
        );
    }
    Ok(path)
}
