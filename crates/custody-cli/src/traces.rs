//! `custody traces`: the trace store's queries against a running server, as
//! readable tables or as JSON.

use clap::{Args, Subcommand, ValueEnum};
use custody_client::{Client, TraceQuery};
use serde_json::Value;

/// Where the server is and the key that reads it.
#[derive(Args)]
pub struct ServerArgs {
    /// The server's base URL
    #[arg(long, env = "CUSTODY_SERVER", default_value = "http://127.0.0.1:7300")]
    pub server: String,
    /// An API key with scope read (or admin)
    #[arg(long, env = "CUSTODY_KEY", hide_env_values = true)]
    pub key: String,
}

impl ServerArgs {
    pub fn client(&self) -> Result<Client, custody_client::ClientError> {
        Client::new(&self.server, &self.key)
    }
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The workspace to read [default: the key's own]
    #[arg(long)]
    workspace: Option<String>,
    /// table (readable) or json (the API's answer as it came)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args)]
pub struct QueryFilters {
    #[arg(long)]
    session_id: Option<String>,
    #[arg(long)]
    process_id: Option<String>,
    #[arg(long)]
    agent_name: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// model_call, tool_call, retrieval or agent
    #[arg(long)]
    kind: Option<String>,
    /// ok or error
    #[arg(long)]
    status: Option<String>,
    /// RFC 3339 time, inclusive
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time, exclusive
    #[arg(long)]
    until: Option<String>,
    /// Records per page (1 to 1000)
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue after a previous page (its `next_cursor`)
    #[arg(long)]
    cursor: Option<String>,
}

impl QueryFilters {
    fn into_query(self, workspace: Option<String>) -> TraceQuery {
        let QueryFilters { session_id, process_id, agent_name, model, kind, status, since, until, limit, cursor } =
            self;
        TraceQuery {
            workspace,
            session_id,
            process_id,
            agent_name,
            model,
            kind,
            status,
            since,
            until,
            limit: Some(limit),
            cursor,
        }
    }
}

#[derive(Subcommand)]
pub enum TracesCommand {
    /// Search trace records (model calls, tool calls, retrievals, agents)
    #[command(long_about = "Search trace records, oldest first. Every filter narrows; --until is exclusive.\n\n\
        Each record's content hash is checked against the record before it is shown.\n\n\
        Examples:\n  custody traces query --workspace acme --session-id sess-9\n  \
        custody traces query --workspace acme --model gpt-4o --status error --since 2026-12-01T00:00:00Z --format json")]
    Query {
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        filters: QueryFilters,
    },
    /// Show a session's processes (agents and sub-agents) as a tree with rollups
    #[command(long_about = "Show a session's processes as a tree: for each process its own calls, tokens, \
        latency and errors, and the same over its whole subtree.\n\n\
        Example:\n  custody traces tree sess-9 --workspace acme")]
    Tree {
        /// The root session's id
        session_id: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Calls, tokens and latency percentiles, grouped
    #[command(long_about = "Calls, tokens and latency percentiles of a workspace's model, tool and retrieval \
        calls, grouped by any of model, model_version, provider, agent_name, kind, day.\n\n\
        Example:\n  custody traces usage --workspace acme --group-by provider,model --since 2026-12-01T00:00:00Z")]
    Usage {
        #[command(flatten)]
        read: ReadArgs,
        /// Comma-separated: model, model_version, provider, agent_name, kind, day
        #[arg(long, default_value = "model")]
        group_by: String,
        #[arg(long)]
        session_id: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
}

pub async fn run(command: TracesCommand) -> anyhow::Result<()> {
    match command {
        TracesCommand::Query { read, filters } => {
            let client = read.server.client()?;
            let query = filters.into_query(read.workspace.clone());
            let (records, next) = client.trace_records(&query).await?;
            if read.format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"records": records, "next_cursor": next}))?
                );
                return Ok(());
            }
            print!("{}", records_table(&records));
            match next {
                Some(cursor) => eprintln!("{} records; more with --cursor {cursor}", records.len()),
                None => eprintln!("{} records", records.len()),
            }
        }
        TracesCommand::Tree { session_id, read } => {
            let client = read.server.client()?;
            let tree = client.session_tree(read.workspace.as_deref(), &session_id).await?;
            if read.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&tree)?);
            } else {
                print!("{}", tree_text(&tree));
            }
        }
        TracesCommand::Usage { read, group_by, session_id, since, until } => {
            let client = read.server.client()?;
            let keys: Vec<&str> = group_by.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
            let mut filters = Vec::new();
            for (name, value) in [("session_id", &session_id), ("since", &since), ("until", &until)] {
                if let Some(value) = value {
                    filters.push((name, value.as_str()));
                }
            }
            let usage = client.trace_usage(read.workspace.as_deref(), &keys, &filters).await?;
            if read.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&usage)?);
            } else {
                print!("{}", usage_table(&usage));
            }
        }
    }
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.0}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Left-aligned columns, each as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn records_table(records: &[Value]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let tokens = match (&r["usage"]["input_tokens"], &r["usage"]["output_tokens"]) {
                (Value::Null, Value::Null) => "-".to_owned(),
                (i, o) => format!("{}/{}", text(i), text(o)),
            };
            vec![
                text(&r["id"]),
                text(&r["started_at"]),
                text(&r["kind"]),
                text(&r["session_id"]),
                r["process_path"]
                    .as_array()
                    .map(|p| p.iter().map(text).collect::<Vec<_>>().join("/"))
                    .unwrap_or_default(),
                text(&r["agent_name"]),
                text(&r["model"]),
                tokens,
                r["latency_ms"].as_u64().map_or("-".into(), |ms| format!("{ms} ms")),
                text(&r["status"]),
            ]
        })
        .collect();
    table(
        &["ID", "STARTED", "KIND", "SESSION", "PROCESS", "AGENT", "MODEL", "TOKENS IN/OUT", "LATENCY", "STATUS"],
        &rows,
    )
}

fn rollup(r: &Value) -> String {
    format!(
        "{} calls, {}/{} tokens, {} ms total, p95 {}, {} errors",
        text(&r["calls"]),
        text(&r["input_tokens"]),
        text(&r["output_tokens"]),
        text(&r["total_latency_ms"]),
        r["p95_latency_ms"].as_u64().map_or("-".into(), |ms| format!("{ms} ms")),
        text(&r["errors"]),
    )
}

fn tree_text(tree: &Value) -> String {
    fn node(out: &mut String, n: &Value, prefix: &str, last: bool, root: bool) {
        let branch = if root {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let name = match n["agent_name"].as_str() {
            Some(agent) => format!("{} ({agent})", text(&n["process_id"])),
            None => text(&n["process_id"]),
        };
        out.push_str(&format!("{prefix}{branch}{name}: own {}", rollup(&n["own"])));
        let children = n["children"].as_array().map(Vec::as_slice).unwrap_or_default();
        if !children.is_empty() {
            out.push_str(&format!("; subtree {}", rollup(&n["subtree"])));
        }
        out.push('\n');
        let child_prefix =
            if root { prefix.to_owned() } else { format!("{prefix}{}", if last { "   " } else { "│  " }) };
        for (i, child) in children.iter().enumerate() {
            node(out, child, &child_prefix, i + 1 == children.len(), false);
        }
    }
    let mut out = format!("session {}: {}\n", text(&tree["session_id"]), rollup(&tree["total"]));
    let roots = tree["processes"].as_array().map(Vec::as_slice).unwrap_or_default();
    for root in roots {
        node(&mut out, root, "", true, true);
    }
    out
}

fn usage_table(usage: &Value) -> String {
    let keys: Vec<String> = usage["group_by"].as_array().map(|k| k.iter().map(text).collect()).unwrap_or_default();
    let numbers = [
        ("CALLS", "calls"),
        ("INPUT", "input_tokens"),
        ("OUTPUT", "output_tokens"),
        ("CACHE READ", "cache_read_tokens"),
        ("REASONING", "reasoning_tokens"),
        ("ERRORS", "errors"),
        ("P50 MS", "latency_p50_ms"),
        ("P95 MS", "latency_p95_ms"),
        ("P99 MS", "latency_p99_ms"),
    ];
    let upper: Vec<String> = keys.iter().map(|k| k.to_uppercase()).collect();
    let mut header: Vec<&str> = upper.iter().map(String::as_str).collect();
    header.extend(numbers.iter().map(|(h, _)| *h));
    let rows: Vec<Vec<String>> = usage["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|g| keys.iter().map(|k| text(&g[k])).chain(numbers.iter().map(|(_, f)| text(&g[*f]))).collect())
        .collect();
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tree_reads_as_an_indented_outline() {
        let r = json!({"calls": 1, "input_tokens": 10, "output_tokens": 2, "total_latency_ms": 5, "p95_latency_ms": 5, "errors": 0});
        let tree = json!({"session_id": "s", "total": r, "processes": [
            {"process_id": "root", "agent_name": "support", "own": r, "subtree": r, "children": [
                {"process_id": "a", "own": r, "subtree": r, "children": [
                    {"process_id": "a1", "own": r, "subtree": r, "children": []}]},
                {"process_id": "b", "own": r, "subtree": r, "children": []}]}]});
        let out = tree_text(&tree);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("session s: 1 calls"), "{out}");
        assert!(lines[1].starts_with("root (support): own"), "{out}");
        assert!(lines[2].starts_with("├─ a: own"), "{out}");
        assert!(lines[3].starts_with("│  └─ a1: own"), "{out}");
        assert!(lines[4].starts_with("└─ b: own"), "{out}");
    }

    #[test]
    fn usage_tables_have_a_column_per_key_and_figure() {
        let usage = json!({"group_by": ["model"], "groups": [
            {"model": "gpt-4o", "calls": 3, "input_tokens": 30, "output_tokens": 6, "cache_read_tokens": 0,
             "reasoning_tokens": 0, "errors": 1, "latency_p50_ms": 12.0, "latency_p95_ms": 19.5, "latency_p99_ms": null}]});
        let out = usage_table(&usage);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("MODEL   CALLS  INPUT"), "{out}");
        assert!(lines[1].starts_with("gpt-4o  3      30"), "{out}");
        assert!(lines[1].ends_with("12      20      -"), "{out}");
    }
}
