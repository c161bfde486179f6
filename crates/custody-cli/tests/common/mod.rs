//! Running the `custody` binary in tests.
#![allow(dead_code)]

pub mod python;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "cli-test-bootstrap-key-0123456789";

pub fn custody() -> Command {
    Command::new(env!("CARGO_BIN_EXE_custody"))
}

pub fn run(args: &[&str]) -> Output {
    custody().args(args).env("CUSTODY_LOG", "warn").output().expect("run custody")
}

/// `custody serve` on a free loopback port; returns the child and its base URL.
pub fn serve(data_dir: &Path) -> (Child, String) {
    let (child, url, _) = serve_with_grpc(data_dir);
    (child, url)
}

/// `custody serve` with HTTP and OTLP/gRPC on free loopback ports; returns the
/// child, its base URL and the gRPC receiver's address.
pub fn serve_with_grpc(data_dir: &Path) -> (Child, String, String) {
    let mut command = custody();
    command
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0"])
        .env("CUSTODY_BOOTSTRAP_KEY", ADMIN);
    let mut grpc = None;
    let (child, url) = spawn_until(&mut command, "custody serve", |line| {
        if let Some(rest) = line.strip_prefix("OTLP/gRPC receiver on ") {
            grpc = Some(rest.trim().to_owned());
        }
        line.strip_prefix("custody serving on ").map(|rest| rest.split_whitespace().next().expect("url").to_owned())
    });
    (child, url, grpc.expect("the gRPC receiver's address is printed first"))
}

/// Spawns `command` (its stdout piped, warnings only in its log) and reads
/// what it prints until `find` takes a line, for at most 30 s; then keeps
/// draining stdout so the child never blocks on a full pipe or writes into a
/// closed one. Kills the child and panics when no line is taken.
pub fn spawn_until<T>(command: &mut Command, what: &str, mut find: impl FnMut(&str) -> Option<T>) -> (Child, T) {
    let mut child = command
        .env("CUSTODY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(found) = find(&line) {
            std::thread::spawn(move || lines.for_each(drop));
            return (child, found);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not print what the test waits for");
}
