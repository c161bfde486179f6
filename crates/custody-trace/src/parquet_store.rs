//! The embedded trace store, `parquet://DIR`: the [`Ingest`] pipeline for
//! writes, DataFusion over its Parquet files and its buffer for reads.
//!
//! A query reads the workspace's directory as a Hive-partitioned table (`day`,
//! `classification` are columns; a time range prunes whole day directories)
//! together with the records still buffered, so a record can be queried as
//! soon as its append is acknowledged. A record is in one place at a time
//! except in two short windows — a flush that has written its files but not
//! yet released its buffer, a compaction that has written its merged file but
//! not yet deleted the small ones — and after a replay older than the ingest's
//! memory of recent ids; reads therefore keep one row per id (duplicates are
//! identical copies). A compaction can delete a file a query has listed but
//! not yet opened: such a query is run again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use async_trait::async_trait;
use custody_model::{RecordKind, RecordStatus, Timestamp, WorkspaceName};
use datafusion::common::ScalarValue;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_aggregate::expr_fn::{count, max, percentile_cont, sum};
use datafusion::prelude::{DataFrame, Expr, ParquetReadOptions, SessionConfig, SessionContext, cast, col, lit, when};

use crate::ingest::{Ingest, IngestOptions, Recovered};
use crate::parquet_files::{
    self, Columns, UNCLASSIFIED, count_at, records_from_batch, schema, text_at, to_record_batch,
};
use crate::record::{Prepared, StoredRecord};
use crate::store::{
    RecordPage, RecordQuery, StoreStats, TraceError, TraceRow, TraceStore, UsageKey, UsageQuery, UsageRow,
};
use crate::tree::CallSummary;

/// How many times a query is run again when a file it listed was compacted away.
const QUERY_ATTEMPTS: usize = 3;

pub struct ParquetTraceStore {
    root: PathBuf,
    ingest: Ingest,
    ctx: SessionContext,
    recovered: Recovered,
}

impl ParquetTraceStore {
    /// Opens (or creates) the store under `root`, replaying its write-ahead log.
    pub fn open(root: &Path, options: IngestOptions) -> Result<Self, TraceError> {
        let (ingest, recovered) = Ingest::open(root, options)?;
        if recovered != Recovered::default() {
            tracing::info!(?recovered, root = %root.display(), "trace store recovered");
        }
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .set_bool("datafusion.execution.parquet.schema_force_view_types", false);
        // Files come and go with every flush and compaction: list them afresh for each query.
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()
            .map_err(query_failed)?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        Ok(Self { root: root.to_path_buf(), ingest, ctx, recovered })
    }

    /// What opening found and replayed.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// The ingest pipeline (to flush or compact on demand).
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// The workspace's rows, files and buffer alike, with `day` and
    /// `classification` columns; `keep` pre-selects buffered records.
    async fn table(
        &self,
        workspace: &WorkspaceName,
        keep: impl Fn(&StoredRecord) -> bool,
    ) -> Result<DataFrame, TraceError> {
        let buffered = self.ingest.buffered_matching(|r| r.record.workspace == *workspace && keep(r));
        let memory = self.ctx.read_batch(with_partition_columns(&buffered)?).map_err(query_failed)?;
        let dir = self.ingest.data_dir().join(format!("workspace={workspace}"));
        let has_files = parquet_files::data_files(&dir).map_err(|e| TraceError::Unavailable(e.to_string()))?;
        if has_files.is_empty() {
            return Ok(memory);
        }
        let file_schema = schema();
        let options = ParquetReadOptions::default()
            .schema(&file_schema)
            .table_partition_cols(vec![("day".into(), DataType::Utf8), ("classification".into(), DataType::Utf8)]);
        let files = self.ctx.read_parquet(format!("{}/", dir.display()), options).await.map_err(query_failed)?;
        let columns = |df: DataFrame| {
            let mut exprs: Vec<Expr> = file_schema.fields().iter().map(|f| col(f.name())).collect();
            exprs.push(cast(col("day"), DataType::Utf8).alias("day"));
            exprs.push(cast(col("classification"), DataType::Utf8).alias("classification"));
            df.select(exprs)
        };
        columns(files).and_then(|f| f.union(columns(memory)?)).map_err(query_failed)
    }

    /// Runs `plan` again when a file it listed disappeared under it (compaction).
    async fn collect<F, Fut>(&self, plan: F) -> Result<Vec<RecordBatch>, TraceError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<DataFrame, TraceError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match plan().await {
                Ok(df) => df.collect().await.map_err(query_failed),
                Err(e) => Err(e),
            };
            match result {
                Err(TraceError::Unavailable(reason)) if attempt < QUERY_ATTEMPTS && vanished(&reason) => {
                    tracing::debug!(reason, "a trace file was compacted away under a query; running it again");
                }
                other => return other,
            }
        }
    }

    fn rows(&self, batches: &[RecordBatch], workspace: &WorkspaceName) -> Result<Vec<StoredRecord>, TraceError> {
        let mut records = Vec::new();
        for batch in batches {
            records.extend(records_from_batch(batch, workspace).map_err(|e| TraceError::Unavailable(e.to_string()))?);
        }
        Ok(records)
    }
}

fn query_failed(e: impl std::fmt::Display) -> TraceError {
    TraceError::Unavailable(format!("trace query failed: {e}"))
}

fn vanished(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("no such file") || reason.contains("not found")
}

/// The buffered records as a batch with the partition columns files get from their path.
fn with_partition_columns(records: &[StoredRecord]) -> Result<RecordBatch, TraceError> {
    let failed = |e: arrow::error::ArrowError| TraceError::Unavailable(e.to_string());
    let batch = to_record_batch(records).map_err(failed)?;
    let day: StringArray = records.iter().map(|r| Some(r.record.started_at.utc_day())).collect();
    let classification: StringArray = records
        .iter()
        .map(|r| Some(r.record.classification.clone().unwrap_or_else(|| UNCLASSIFIED.to_owned())))
        .collect();
    let mut fields: Vec<arrow::datatypes::FieldRef> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new("day", DataType::Utf8, false)));
    fields.push(Arc::new(arrow::datatypes::Field::new("classification", DataType::Utf8, false)));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(day));
    columns.push(Arc::new(classification));
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).map_err(failed)
}

fn timestamp(t: Timestamp) -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(t.unix_nanos()), Some("UTC".into())))
}

/// The time filters on `started_at`, and the day directories they allow.
fn time_filters(since: Option<Timestamp>, until: Option<Timestamp>) -> Vec<Expr> {
    let mut filters = Vec::new();
    if let Some(since) = since {
        filters.push(col("day").gt_eq(lit(since.utc_day())));
        filters.push(col("started_at").gt_eq(timestamp(since)));
    }
    if let Some(until) = until {
        filters.push(col("day").lt_eq(lit(until.utc_day())));
        filters.push(col("started_at").lt(timestamp(until)));
    }
    filters
}

fn all(filters: Vec<Expr>) -> Option<Expr> {
    filters.into_iter().reduce(Expr::and)
}

/// Keeps the first of each id.
fn unique(records: Vec<StoredRecord>) -> Vec<StoredRecord> {
    let mut seen = HashSet::new();
    records.into_iter().filter(|r| seen.insert(r.id().to_owned())).collect()
}

fn status_str(status: RecordStatus) -> &'static str {
    match status {
        RecordStatus::Ok => "ok",
        RecordStatus::Error => "error",
    }
}

#[async_trait]
impl TraceStore for ParquetTraceStore {
    async fn append_prepared(&self, records: Vec<Prepared>) -> Result<usize, TraceError> {
        Ok(self.ingest.append_prepared(records).await?)
    }

    async fn get(&self, workspace: &WorkspaceName, id: &str) -> Result<Option<TraceRow>, TraceError> {
        let batches = self
            .collect(|| async {
                let df = self.table(workspace, |r| r.id() == id).await?;
                df.filter(col("id").eq(lit(id))).and_then(|df| df.limit(0, Some(1))).map_err(query_failed)
            })
            .await?;
        Ok(self.rows(&batches, workspace)?.first().map(TraceRow::new))
    }

    async fn search(&self, query: &RecordQuery) -> Result<RecordPage, TraceError> {
        let workspace = query
            .workspace
            .as_ref()
            .ok_or_else(|| TraceError::InvalidQuery("name the `workspace` to search".into()))?;
        let mut filters = time_filters(query.since, query.until);
        for (column, value) in [
            ("session_id", &query.session_id),
            ("process_id", &query.process_id),
            ("agent_name", &query.agent_name),
            ("model", &query.model),
        ] {
            if let Some(value) = value {
                filters.push(col(column).eq(lit(value.as_str())));
            }
        }
        if let Some(kind) = query.kind {
            filters.push(col("kind").eq(lit(kind.as_str())));
        }
        if let Some(status) = query.status {
            filters.push(col("status").eq(lit(status_str(status))));
        }
        if let Some(action) = &query.action_id {
            filters.push(datafusion::functions_nested::expr_fn::array_has(col("action_ids"), lit(action.as_str())));
        }
        if let Some(after) = &query.after {
            let at = timestamp(after.started_at);
            filters.push(
                col("started_at").gt(at.clone()).or(col("started_at").eq(at).and(col("id").gt(lit(after.id.as_str())))),
            );
        }
        let filter = all(filters);
        // Only the buffered records the query can return are copied out of the buffer.
        let keep = |stored: &StoredRecord| {
            let r = &stored.record;
            let is = |wanted: &Option<String>, value: Option<&String>| wanted.is_none() || wanted.as_ref() == value;
            is(&query.session_id, Some(&r.session_id))
                && is(&query.process_id, Some(&r.process_id))
                && is(&query.agent_name, r.agent_name.as_ref())
                && is(&query.model, r.model.as_ref())
                && query.kind.is_none_or(|k| k == r.kind)
                && query.status.is_none_or(|s| s == r.status)
                && query.action_id.as_ref().is_none_or(|a| r.action_ids.contains(a))
                && query.since.is_none_or(|t| r.started_at >= t)
                && query.until.is_none_or(|t| r.started_at < t)
        };
        // Copies of one record sort next to each other; fetch more when they cost page slots.
        let mut fetch = query.limit + 1;
        loop {
            let batches = self
                .collect(|| async {
                    let mut df = self.table(workspace, keep).await?;
                    if let Some(filter) = &filter {
                        df = df.filter(filter.clone()).map_err(query_failed)?;
                    }
                    df.sort(vec![col("started_at").sort(true, false), col("id").sort(true, false)])
                        .and_then(|df| df.limit(0, Some(fetch)))
                        .map_err(query_failed)
                })
                .await?;
            let raw = self.rows(&batches, workspace)?;
            let fetched = raw.len();
            let mut records = unique(raw);
            if records.len() > query.limit || fetched < fetch {
                let next_cursor = (records.len() > query.limit).then(|| {
                    records.truncate(query.limit);
                    let last = &records[records.len() - 1];
                    crate::store::RecordCursor { started_at: last.record.started_at, id: last.id().to_owned() }.encode()
                });
                return Ok(RecordPage { records: records.iter().map(TraceRow::new).collect(), next_cursor });
            }
            fetch *= 2;
        }
    }

    async fn session_calls(
        &self,
        workspace: &WorkspaceName,
        sessions: &[String],
    ) -> Result<Vec<(String, CallSummary)>, TraceError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: HashSet<&str> = sessions.iter().map(String::as_str).collect();
        let columns = [
            "id",
            "session_id",
            "kind",
            "process_id",
            "parent_process_id",
            "agent_name",
            "model",
            "input_tokens",
            "output_tokens",
            "latency_ms",
            "status",
            "started_at",
        ];
        let batches = self
            .collect(|| async {
                let df = self.table(workspace, |r| wanted.contains(r.record.session_id.as_str())).await?;
                let list: Vec<Expr> = sessions.iter().map(|s| lit(s.as_str())).collect();
                df.filter(col("session_id").in_list(list, false))
                    .and_then(|df| df.select_columns(&columns))
                    .map_err(query_failed)
            })
            .await?;
        let mut seen = HashSet::new();
        let mut calls = Vec::new();
        for batch in &batches {
            let columns = Columns(batch);
            let text = |name: &str| columns.strings(name).map_err(query_failed);
            let int = |name: &str| columns.ints(name).map_err(query_failed);
            let (id, session, kind, process, parent, agent, model, status) = (
                text("id")?,
                text("session_id")?,
                text("kind")?,
                text("process_id")?,
                text("parent_process_id")?,
                text("agent_name")?,
                text("model")?,
                text("status")?,
            );
            let (input, output, latency, started) =
                (int("input_tokens")?, int("output_tokens")?, int("latency_ms")?, int("started_at")?);
            let (opt, num) = (text_at, count_at);
            for i in 0..batch.num_rows() {
                if !seen.insert(id.value(i).to_owned()) {
                    continue;
                }
                let Some(kind) = RecordKind::parse(kind.value(i)) else { continue };
                calls.push((
                    session.value(i).to_owned(),
                    CallSummary {
                        id: id.value(i).to_owned(),
                        kind,
                        process_id: process.value(i).to_owned(),
                        parent_process_id: opt(&parent, i),
                        agent_name: opt(&agent, i),
                        model: opt(&model, i),
                        input_tokens: num(&input, i).unwrap_or_default(),
                        output_tokens: num(&output, i).unwrap_or_default(),
                        latency_ms: num(&latency, i),
                        status: if status.value(i) == "error" { RecordStatus::Error } else { RecordStatus::Ok },
                        started_at: Timestamp::from_unix_nanos(started.value(i)),
                    },
                ));
            }
        }
        Ok(calls)
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, TraceError> {
        let workspace = query
            .workspace
            .as_ref()
            .ok_or_else(|| TraceError::InvalidQuery("name the `workspace` to report on".into()))?;
        let mut filters = time_filters(query.since, query.until);
        filters.push(col("kind").not_eq(lit(RecordKind::Agent.as_str())));
        if let Some(session) = &query.session_id {
            filters.push(col("session_id").eq(lit(session.as_str())));
        }
        let filter = all(filters);
        let keys: Vec<&str> = query.group_by.iter().map(UsageKey::as_str).collect();
        let zero = |name: &str| sum(col(name)).alias(name);
        let percentile = |p: f64, name: &str| {
            percentile_cont(cast(col("latency_ms"), DataType::Float64).sort(true, false), lit(p)).alias(name)
        };
        let aggregates = vec![
            count(col("id")).alias("calls"),
            zero("input_tokens"),
            zero("output_tokens"),
            zero("cache_read_tokens"),
            zero("reasoning_tokens"),
            sum(when(col("status").eq(lit("error")), lit(1i64)).otherwise(lit(0i64)).map_err(query_failed)?)
                .alias("errors"),
            percentile(0.5, "p50"),
            percentile(0.95, "p95"),
            percentile(0.99, "p99"),
        ];
        let mut needed: Vec<&str> = vec![
            "id",
            "kind",
            "status",
            "started_at",
            "day",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "reasoning_tokens",
            "latency_ms",
            "session_id",
        ];
        needed.extend(keys.iter().filter(|k| !["kind", "day"].contains(k)));
        let batches = self
            .collect(|| async {
                let keep = |stored: &StoredRecord| {
                    let r = &stored.record;
                    r.kind != RecordKind::Agent
                        && query.session_id.as_ref().is_none_or(|s| *s == r.session_id)
                        && query.since.is_none_or(|t| r.started_at >= t)
                        && query.until.is_none_or(|t| r.started_at < t)
                };
                let mut df = self.table(workspace, keep).await?.select_columns(&needed).map_err(query_failed)?;
                if let Some(filter) = &filter {
                    df = df.filter(filter.clone()).map_err(query_failed)?;
                }
                // One row per id before counting: copies of a record are identical, so
                // grouping by id (and the group keys) and taking any value of each
                // figure is exact — and far cheaper than `DISTINCT ON`'s first values.
                let mut per_id: Vec<Expr> = vec![col("id")];
                per_id.extend(keys.iter().map(|k| col(*k)));
                let figures = ["input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "latency_ms"];
                let mut values: Vec<Expr> = figures.iter().map(|f| max(col(*f)).alias(*f)).collect();
                values.push(max(col("status")).alias("status"));
                let group: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
                df.aggregate(per_id, values)
                    .and_then(|df| df.aggregate(group, aggregates.clone()))
                    .and_then(|df| df.sort(keys.iter().map(|k| col(*k).sort(true, true)).collect()))
                    .map_err(query_failed)
            })
            .await?;
        let mut rows = Vec::new();
        for batch in &batches {
            let columns = Columns(batch);
            let int = |name: &str| columns.ints(name).map_err(query_failed);
            let float = |name: &str| columns.floats(name).map_err(query_failed);
            let groups: Vec<StringArray> =
                keys.iter().map(|k| columns.strings(k).map_err(query_failed)).collect::<Result<_, _>>()?;
            let ints =
                ["calls", "input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "errors"].map(int);
            let [calls, input, output, cache, reasoning, errors] = ints;
            let (calls, input, output, cache, reasoning, errors) =
                (calls?, input?, output?, cache?, reasoning?, errors?);
            let (p50, p95, p99) = (float("p50")?, float("p95")?, float("p99")?);
            let n = |a: &arrow::array::Int64Array, i: usize| count_at(a, i).unwrap_or_default();
            let f = |a: &arrow::array::Float64Array, i: usize| (!a.is_null(i)).then(|| a.value(i));
            for i in 0..batch.num_rows() {
                rows.push(UsageRow {
                    group: groups.iter().map(|g| text_at(g, i)).collect(),
                    calls: n(&calls, i),
                    input_tokens: n(&input, i),
                    output_tokens: n(&output, i),
                    cache_read_tokens: n(&cache, i),
                    reasoning_tokens: n(&reasoning, i),
                    errors: n(&errors, i),
                    latency_p50_ms: f(&p50, i),
                    latency_p95_ms: f(&p95, i),
                    latency_p99_ms: f(&p99, i),
                });
            }
        }
        Ok(rows)
    }

    async fn health(&self) -> Result<(), TraceError> {
        match self.ingest.failure() {
            Some(reason) => Err(TraceError::Unavailable(reason)),
            None => Ok(()),
        }
    }

    fn stats(&self) -> StoreStats {
        let (_, wal_bytes) = disk_usage(&self.root.join("wal"), "wal");
        let (data_files, data_bytes) = disk_usage(self.ingest.data_dir(), "parquet");
        StoreStats { buffered_bytes: self.ingest.pending_bytes() as u64, wal_bytes, data_files, data_bytes }
    }

    async fn close(&self) -> Result<(), TraceError> {
        Ok(self.ingest.close()?)
    }
}

/// Files with `extension` under `dir`, and their bytes.
fn disk_usage(dir: &Path, extension: &str) -> (u64, u64) {
    let files = parquet_files::files_with_extension(dir, extension).unwrap_or_default();
    let bytes = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    (files.len() as u64, bytes)
}
