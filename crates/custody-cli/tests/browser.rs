//! The dashboard in a real browser: headless Chromium (Debian's), driven by
//! playwright-core from `tests/browser/dashboard.mjs`, signs in after
//! `custody demo`, opens the send's chain of custody and the session tree, and
//! checks that the approver, the model and the helper agents are shown.
//! Screenshots go to `target/browser/`. `.ci/run` installs Chromium and the
//! script's package; in CI their absence fails the test, elsewhere it says
//! what to install and checks nothing else.

mod common;

use std::path::{Path, PathBuf};

fn browser_setup() -> Option<(PathBuf, PathBuf)> {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let ready = chromium.exists() && script_dir.join("node_modules/playwright-core").exists();
    if !ready {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI must provide Chromium ({}) and playwright-core under {} (see .ci/run)",
                chromium.display(),
                script_dir.display()
            );
        }
        eprintln!(
            "browser test: install Debian's chromium and run `npm install --no-package-lock` in {} to run it",
            script_dir.display()
        );
        return None;
    }
    Some((chromium, script_dir))
}

#[test]
fn the_dashboard_shows_the_chain_of_custody_and_the_swarm_after_the_demo() {
    let Some((chromium, script_dir)) = browser_setup() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut command = common::custody();
    command
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--bundle")
        .arg(dir.path().join("send.json"));
    // "The server keeps serving at URL (read key KEY); Ctrl-C stops it."
    let (mut demo, (url, key)) = common::spawn_until(&mut command, "custody demo", |line| {
        let rest = line.strip_prefix("The server keeps serving at ")?;
        let (url, rest) = rest.split_once(" (read key ").expect("the read key");
        let key = rest.split_once(')').expect("the key's end").0;
        Some((url.to_owned(), key.to_owned()))
    });
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("node")
        .arg(script_dir.join("dashboard.mjs"))
        .args([&url, &key])
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    demo.kill().unwrap();
    demo.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every check passed"), "{stdout}");
    for shot in ["logs", "audit", "chain-of-custody", "session-tree", "model-call"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "screenshot {shot}");
    }
}
