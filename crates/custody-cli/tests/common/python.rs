//! The Python interpreter of the client tests: `CUSTODY_TEST_PYTHON`, else the
//! virtual environment `.ci/run` creates at `target/ci-venv`. In CI a missing
//! interpreter fails the test; elsewhere the caller says what to install and
//! checks nothing else.

use std::path::{Path, PathBuf};

pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CUSTODY_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ci-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI must provide the Python test environment: set CUSTODY_TEST_PYTHON or create target/ci-venv (see .ci/run)"
        );
    }
    None
}
