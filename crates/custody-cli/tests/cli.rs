//! The binary's help and its errors teach; exit codes are as documented.

mod common;

#[test]
fn help_explains_every_command() {
    let out = common::run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "verify", "keys", "bench", "Exit codes"] {
        assert!(help.contains(word), "`custody --help` should mention {word}:\n{help}");
    }
    for (args, word) in [
        (vec!["serve", "--help"], "--data-dir"),
        (vec!["serve", "--help"], "CUSTODY_BOOTSTRAP_KEY"),
        (vec!["verify", "--help"], "--public-key"),
        (vec!["keys", "create", "--help"], "audit:write"),
        (vec!["keys", "list", "--help"], "--workspace"),
        (vec!["keys", "revoke", "--help"], "<ID>"),
        (vec!["bench", "audit", "--help"], "--release"),
    ] {
        let out = common::run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(word), "`custody {}` should mention {word}:\n{help}", args.join(" "));
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(common::run(&["serve", "--listen", "not-an-address"]).status.code(), Some(2));
    assert_eq!(common::run(&["frobnicate"]).status.code(), Some(2));
    let out = common::run(&["keys", "list", "--server", "ftp://x", "--key", "k"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
}

#[test]
fn keys_commands_manage_keys_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = common::serve(&dir.path().join("data"));
    let keys = |args: &[&str]| {
        common::custody()
            .arg("keys")
            .args(args)
            .env("CUSTODY_SERVER", &url)
            .env("CUSTODY_KEY", common::ADMIN)
            .output()
            .unwrap()
    };
    let out = keys(&["create", "--workspace", "acme", "--scope", "audit:write", "--label", "permission-layer"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("cust_"), "{token}");
    let id = token.split('_').nth(1).unwrap().to_owned();
    let out = keys(&["list", "--workspace", "acme"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&id) && listing.contains("permission-layer") && listing.contains("active"), "{listing}");
    let out = keys(&["revoke", &id]);
    assert_eq!(out.status.code(), Some(0));
    let listing = String::from_utf8_lossy(&keys(&["list"]).stdout).into_owned();
    assert!(listing.lines().any(|l| l.contains(&id) && l.contains("revoked")), "{listing}");
    let out = keys(&["create", "--workspace", "acme", "--scope", "root"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit:write, trace:write, read, admin"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = common::serve(&dir.path().join("data"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "custody serve exits 0 after SIGTERM");
}

#[test]
fn bench_audit_runs_both_paths_against_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        common::run(&["bench", "audit", "--seconds", "1", "--clients", "1,2", "--dir", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for needle in
        ["baseline (SQLite WAL, synchronous=FULL", "appends/s", "without HTTP", "events per commit group", "targets:"]
    {
        assert!(stdout.contains(needle), "missing `{needle}` in\n{stdout}");
    }
    // Every step printed a row with a rate above zero.
    let rows: Vec<&str> =
        stdout.lines().filter(|l| l.trim_start().starts_with(['1', '2']) && l.contains('x')).collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for row in rows {
        let rate: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rate > 0.0, "{row}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the temporary data is removed");
}
