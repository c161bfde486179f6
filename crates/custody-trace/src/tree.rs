//! The process tree of a session, with per-process and per-subtree rollups.
//!
//! Every record names its process and (optionally) that process's parent. The
//! tree is built from those links alone, whatever order the records came in: a
//! process whose parent is unknown in the session is a root; a cycle of parent
//! links is broken where it is found, the process that closes it becoming a root.
//! Storage backends only fetch a session's call summaries; the tree and its
//! rollups are computed here, the same for every backend.

use std::collections::{BTreeMap, HashMap, HashSet};

use custody_model::{RecordKind, RecordStatus, Timestamp};
use serde::Serialize;

/// What the tree needs of one record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallSummary {
    pub id: String,
    pub kind: RecordKind,
    pub process_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_process_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    pub status: RecordStatus,
    pub started_at: Timestamp,
}

/// Totals over a set of calls. `agent` records describe a process itself and are
/// not calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Rollup {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_latency_ms: u64,
    /// Nearest-rank 95th percentile of the calls' latencies.
    pub p95_latency_ms: Option<u64>,
    pub errors: u64,
}

impl Rollup {
    fn of<'a>(calls: impl Iterator<Item = &'a CallSummary>) -> Self {
        let mut rollup = Rollup::default();
        let mut latencies = Vec::new();
        for call in calls.filter(|c| c.kind != RecordKind::Agent) {
            rollup.calls += 1;
            rollup.input_tokens += call.input_tokens;
            rollup.output_tokens += call.output_tokens;
            rollup.errors += u64::from(call.status == RecordStatus::Error);
            if let Some(ms) = call.latency_ms {
                rollup.total_latency_ms += ms;
                latencies.push(ms);
            }
        }
        rollup.p95_latency_ms = percentile(&mut latencies, 95);
        rollup
    }
}

/// Nearest-rank percentile.
pub fn percentile(values: &mut [u64], p: u32) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * p as usize).div_ceil(100).max(1);
    values.get(rank - 1).copied()
}

/// One process (agent or sub-agent) of a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessNode {
    pub process_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_process_id: Option<String>,
    /// Process ids from the root down to this one.
    pub path: Vec<String>,
    /// This process's own calls.
    pub own: Rollup,
    /// This process and everything below it.
    pub subtree: Rollup,
    /// This process's calls, in start order.
    pub calls: Vec<CallSummary>,
    pub children: Vec<ProcessNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionTree {
    pub session_id: String,
    pub total: Rollup,
    pub processes: Vec<ProcessNode>,
}

impl SessionTree {
    pub fn build(session_id: &str, mut calls: Vec<CallSummary>) -> Self {
        calls.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        let total = Rollup::of(calls.iter());
        // Each process's calls, its parent (the first one its records state) and name
        // (an `agent` record's, else the first one given).
        let mut by_process: BTreeMap<String, Vec<CallSummary>> = BTreeMap::new();
        let mut parents: HashMap<String, String> = HashMap::new();
        let mut names: HashMap<String, String> = HashMap::new();
        for call in calls {
            if let Some(parent) = &call.parent_process_id {
                parents.entry(call.process_id.clone()).or_insert_with(|| parent.clone());
            }
            if let Some(name) = &call.agent_name {
                if call.kind == RecordKind::Agent {
                    names.insert(call.process_id.clone(), name.clone());
                } else {
                    names.entry(call.process_id.clone()).or_insert_with(|| name.clone());
                }
            }
            by_process.entry(call.process_id.clone()).or_default().push(call);
        }
        // A parent that stated no record of its own still is a process of the tree.
        for parent in parents.values() {
            by_process.entry(parent.clone()).or_default();
        }
        // Break cycles: follow each process's parents; the process whose parent
        // link would close a cycle loses that link.
        let processes: Vec<String> = by_process.keys().cloned().collect();
        for start in &processes {
            let mut seen = HashSet::from([start.clone()]);
            let mut at = start.clone();
            while let Some(parent) = parents.get(&at).cloned() {
                if !seen.insert(parent.clone()) {
                    parents.remove(&at);
                    break;
                }
                at = parent;
            }
        }
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut roots = Vec::new();
        for process in &processes {
            match parents.get(process) {
                Some(parent) => children.entry(parent.clone()).or_default().push(process.clone()),
                None => roots.push(process.clone()),
            }
        }
        let mut builder = Builder { by_process, children, names, parents };
        let processes = roots.iter().map(|root| builder.node(root, Vec::new())).collect();
        SessionTree { session_id: session_id.to_owned(), total, processes }
    }

    /// Every process of the tree, depth first.
    pub fn walk(&self) -> Vec<&ProcessNode> {
        fn visit<'a>(node: &'a ProcessNode, out: &mut Vec<&'a ProcessNode>) {
            out.push(node);
            for child in &node.children {
                visit(child, out);
            }
        }
        let mut out = Vec::new();
        for root in &self.processes {
            visit(root, &mut out);
        }
        out
    }
}

struct Builder {
    by_process: BTreeMap<String, Vec<CallSummary>>,
    children: BTreeMap<String, Vec<String>>,
    names: HashMap<String, String>,
    parents: HashMap<String, String>,
}

impl Builder {
    fn node(&mut self, process: &str, mut path: Vec<String>) -> ProcessNode {
        path.push(process.to_owned());
        let calls = self.by_process.remove(process).unwrap_or_default();
        let child_ids = self.children.remove(process).unwrap_or_default();
        let children: Vec<ProcessNode> = child_ids.iter().map(|c| self.node(c, path.clone())).collect();
        let own = Rollup::of(calls.iter());
        let mut subtree_calls: Vec<&CallSummary> = calls.iter().collect();
        fn gather<'a>(node: &'a ProcessNode, out: &mut Vec<&'a CallSummary>) {
            out.extend(node.calls.iter());
            for child in &node.children {
                gather(child, out);
            }
        }
        for child in &children {
            gather(child, &mut subtree_calls);
        }
        let subtree = Rollup::of(subtree_calls.into_iter());
        ProcessNode {
            process_id: process.to_owned(),
            agent_name: self.names.get(process).cloned(),
            parent_process_id: self.parents.get(process).cloned(),
            path,
            own,
            subtree,
            calls,
            children,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        id: &str,
        process: &str,
        parent: Option<&str>,
        kind: RecordKind,
        tokens: (u64, u64),
        ms: u64,
    ) -> CallSummary {
        CallSummary {
            id: id.into(),
            kind,
            process_id: process.into(),
            parent_process_id: parent.map(Into::into),
            agent_name: Some(format!("agent-{process}")),
            model: Some("gpt-4o".into()),
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            latency_ms: Some(ms),
            status: if ms > 900 { RecordStatus::Error } else { RecordStatus::Ok },
            started_at: Timestamp::from_unix_nanos(ms as i64 * 1_000_000 + id.len() as i64),
        }
    }

    /// The swarm of the acceptance test: a root with three helpers, one of which
    /// has two helpers of its own.
    fn swarm() -> Vec<CallSummary> {
        use RecordKind::*;
        vec![
            call("r1", "root", None, ModelCall, (100, 10), 100),
            call("r-agent", "root", None, Agent, (0, 0), 5000),
            call("a1", "a", Some("root"), ModelCall, (50, 5), 200),
            call("a2", "a", Some("root"), ToolCall, (0, 0), 30),
            call("b1", "b", Some("root"), ModelCall, (70, 7), 950),
            call("c1", "c", Some("root"), Retrieval, (0, 0), 40),
            call("c2", "c", Some("root"), ModelCall, (30, 3), 300),
            call("d1", "d", Some("c"), ModelCall, (20, 2), 400),
            call("e1", "e", Some("c"), ModelCall, (10, 1), 500),
            call("e2", "e", Some("c"), ModelCall, (10, 1), 600),
        ]
    }

    #[test]
    fn the_swarm_has_its_shape_and_rollups_add_up_in_any_order() {
        let mut calls = swarm();
        let tree = SessionTree::build("sess", calls.clone());
        calls.reverse();
        assert_eq!(SessionTree::build("sess", calls), tree, "arrival order does not matter");
        assert_eq!(tree.processes.len(), 1);
        let root = &tree.processes[0];
        assert_eq!(root.process_id, "root");
        assert_eq!(root.children.iter().map(|c| c.process_id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        let c = &root.children[2];
        assert_eq!(c.children.iter().map(|c| c.process_id.as_str()).collect::<Vec<_>>(), ["d", "e"]);
        assert_eq!(c.children[1].path, ["root", "c", "e"]);
        assert_eq!(
            c.own,
            Rollup {
                calls: 2,
                input_tokens: 30,
                output_tokens: 3,
                total_latency_ms: 340,
                p95_latency_ms: Some(300),
                errors: 0
            }
        );
        assert_eq!(
            c.subtree,
            Rollup {
                calls: 5,
                input_tokens: 70,
                output_tokens: 7,
                total_latency_ms: 1840,
                p95_latency_ms: Some(600),
                errors: 0
            }
        );
        assert_eq!(root.own.calls, 1, "the agent record is the process, not a call");
        assert_eq!(root.subtree, tree.total);
        assert_eq!(tree.total.calls, 9);
        assert_eq!(tree.total.input_tokens, 290);
        assert_eq!(tree.total.errors, 1);
        let by_process: u64 = tree.walk().iter().map(|n| n.own.input_tokens).sum();
        assert_eq!(by_process, tree.total.input_tokens);
    }

    #[test]
    fn unknown_parents_make_roots_and_cycles_are_broken() {
        use RecordKind::*;
        let calls = vec![
            call("x1", "x", Some("y"), ModelCall, (1, 1), 10),
            call("y1", "y", Some("x"), ModelCall, (1, 1), 10),
            call("z1", "z", Some("gone"), ModelCall, (1, 1), 10),
        ];
        let tree = SessionTree::build("s", calls);
        let all: Vec<&str> = tree.walk().iter().map(|n| n.process_id.as_str()).collect();
        assert_eq!(all.len(), 4, "x, y, z and the parent that sent nothing: {all:?}");
        assert!(tree.walk().iter().all(|n| n.path.len() <= 2));
        assert_eq!(tree.total.calls, 3);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&mut [], 95), None);
        assert_eq!(percentile(&mut [7], 95), Some(7));
        let mut values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut values, 95), Some(95));
        assert_eq!(percentile(&mut values, 50), Some(50));
        assert_eq!(percentile(&mut [5, 1, 3], 95), Some(5));
    }
}
