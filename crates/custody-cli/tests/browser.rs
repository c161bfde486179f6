//! The dashboard in a real browser: headless Chromium (Debian's), driven by
//! playwright-core from `tests/browser/dashboard.mjs`, signs in after
//! `custody demo`, opens the send's chain of custody and the session tree, and
//! checks that the approver, the model and the helper agents are shown.
//! Screenshots go to `target/browser/`. `.ci/run` installs Chromium and the
//! script's package; in CI their absence fails the test, elsewhere it says
//! what to install and checks nothing else.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

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
    let mut demo = common::custody()
        .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--bundle")
        .arg(dir.path().join("send.json"))
        .env("CUSTODY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn custody demo");
    let stdout = demo.stdout.take().expect("stdout");
    let mut serving = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        // "The server keeps serving at URL (read key KEY); Ctrl-C stops it."
        if let Some(rest) = line.strip_prefix("The server keeps serving at ") {
            let (url, rest) = rest.split_once(" (read key ").expect("the read key");
            let key = rest.split_once(')').expect("the key's end").0;
            serving = Some((url.to_owned(), key.to_owned()));
            break;
        }
    }
    let (url, key) = serving.expect("the demo says where it serves");
    // Keep reading what the demo prints, so that it never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
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
