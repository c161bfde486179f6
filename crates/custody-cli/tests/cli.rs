//! The binary's help and its errors teach; exit codes are as documented.

mod common;

#[test]
fn help_explains_every_command() {
    let out = common::run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "verify", "keys", "traces", "report", "verify-bundle", "demo", "bench", "Exit codes"] {
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
        (vec!["bench", "trace", "--help"], "--analytics-calls"),
        (vec!["bench", "otlp", "--help"], "assembly window"),
        (vec!["serve", "--help"], "--otlp-grpc-listen"),
        (vec!["serve", "--help"], "--otlp-export-endpoint"),
        (vec!["traces", "query", "--help"], "--session-id"),
        (vec!["traces", "tree", "--help"], "<SESSION_ID>"),
        (vec!["traces", "usage", "--help"], "agent_name"),
        (vec!["serve", "--help"], "--trace-store"),
        (vec!["report", "--help"], "--bundle"),
        (vec!["verify-bundle", "--help"], "--public-key"),
        (vec!["demo", "--help"], "--no-serve"),
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

#[test]
fn bench_otlp_runs_both_paths_and_prints_the_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run(&[
        "bench",
        "otlp",
        "--seconds",
        "1",
        "--clients",
        "1",
        "--batch",
        "20",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rate = |label: &str| -> f64 {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {stdout}"));
        line.split(": ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(rate("native JSON") > 0.0 && rate("OTLP/HTTP protobuf") > 0.0, "{stdout}");
    assert!(stdout.contains("OTLP / native:") && stdout.contains("target:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_commands_show_records_trees_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = common::serve(&dir.path().join("data"));
    let records: Vec<serde_json::Value> = [("root", None, "support"), ("helper", Some("root"), "drafter")]
        .iter()
        .enumerate()
        .map(|(i, (process, parent, agent))| {
            serde_json::json!({"workspace": "acme", "kind": "model_call", "session_id": "sess-cli",
                "process_id": process, "parent_process_id": parent, "agent_name": agent,
                "provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 100 * (i + 1), "output_tokens": 10},
                "started_at": format!("2026-12-01T10:00:0{i}Z"), "ended_at": format!("2026-12-01T10:00:0{}Z", i + 2)})
        })
        .collect();
    let client = custody_client::Client::new(&url, common::ADMIN).unwrap();
    assert_eq!(client.append_traces(&records).await.unwrap().accepted, 2);
    let base = ["--server", url.as_str(), "--key", common::ADMIN, "--workspace", "acme"];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(base);
        let out = common::run(&all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = run(&["traces", "query", "--session-id", "sess-cli"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("root/helper") && table.contains("2000 ms") && table.contains("200/10"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&run(&["traces", "query", "--format", "json"])).unwrap();
    assert_eq!(json["records"].as_array().unwrap().len(), 2);
    let tree = run(&["traces", "tree", "sess-cli"]);
    assert!(tree.starts_with("session sess-cli: 2 calls, 300/20 tokens"), "{tree}");
    assert!(
        tree.contains("root (support): own 1 calls") && tree.contains("└─ helper (drafter): own 1 calls"),
        "{tree}"
    );
    let usage = run(&["traces", "usage", "--group-by", "agent_name"]);
    assert!(usage.starts_with("AGENT_NAME") && usage.contains("drafter") && usage.contains("support"), "{usage}");
    let usage: serde_json::Value =
        serde_json::from_str(&run(&["traces", "usage", "--group-by", "model", "--format", "json"])).unwrap();
    assert_eq!(usage["groups"][0]["input_tokens"], 300);
    // A session that is not there is an error that says so.
    let mut args = vec!["traces", "tree", "sess-none"];
    args.extend(base);
    let out = common::run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no records of session"), "{:?}", out);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_taken_grpc_port_is_named_with_the_flag_that_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = common::run(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--otlp-grpc-listen",
        &addr,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("--otlp-grpc-listen"), "{stderr}");
}
