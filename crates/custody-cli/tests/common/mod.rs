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
    let mut child = custody()
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0"])
        .env("CUSTODY_BOOTSTRAP_KEY", ADMIN)
        .env("CUSTODY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn custody serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut grpc = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("OTLP/gRPC receiver on ") {
            grpc = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("custody serving on ") {
            let url = rest.split_whitespace().next().expect("url").to_owned();
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, url, grpc.expect("the gRPC receiver's address is printed first"));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("custody serve did not report its address");
}
