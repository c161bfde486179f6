//! Trace records as Parquet files, partitioned the way retention will delete them.
//!
//! Files live under `<root>/workspace=<w>/day=<YYYY-MM-DD>/classification=<c>/`
//! (Hive-style directory partitions, which DataFusion, DuckDB, Spark and pyarrow
//! all read as columns), so expiring one workspace × classification for one day
//! is deleting whole directories. Partition values are validated labels, never
//! free text. Each file is written under a temporary name, fsynced, then renamed
//! into place: a reader never sees half a file.
//!
//! Content (messages, retrieved context, tool calls, routing, attributes) is
//! kept as JSON text; everything a query filters or aggregates on is a typed
//! column. Columns are zstd-compressed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Int64Builder, ListBuilder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use crate::record::StoredRecord;

/// The partition value of records without a classification.
pub use custody_model::trace::UNCLASSIFIED;

#[derive(Debug, thiserror::Error)]
pub enum ParquetFileError {
    #[error("building the record batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("a stored row cannot be read back: {0}")]
    Damaged(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ParquetFileError + '_ {
    move |source| ParquetFileError::Io { path: path.display().to_string(), source }
}

/// The columns of a trace file (partition columns are in the path, not the file).
pub fn schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str, nullable: bool| Field::new(name, DataType::Int64, nullable);
    let time = |name: &str, nullable: bool| {
        Field::new(name, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), nullable)
    };
    Arc::new(Schema::new(vec![
        text("id", false),
        text("kind", false),
        text("session_id", false),
        text("process_id", false),
        text("parent_process_id", true),
        text("agent_name", true),
        text("trace_id", true),
        text("span_id", true),
        text("parent_span_id", true),
        text("provider", true),
        text("model", true),
        text("model_version", true),
        text("routing", true),
        text("input", true),
        text("retrieved_context", true),
        text("output", true),
        text("tool_calls", true),
        // Null when the record has no `usage` (as opposed to zero tokens), so the
        // record reads back exactly as it was sent.
        int("input_tokens", true),
        int("output_tokens", true),
        int("cache_read_tokens", true),
        int("reasoning_tokens", true),
        time("started_at", false),
        time("ended_at", true),
        int("latency_ms", true),
        int("time_to_first_token_ms", true),
        text("status", false),
        text("error", true),
        Field::new("action_ids", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
        text("attributes", true),
        text("content_hash", false),
    ]))
}

/// Where a record's file goes, relative to the store's root.
pub fn partition(record: &StoredRecord) -> PathBuf {
    let r = &record.record;
    PathBuf::from(format!("workspace={}", r.workspace))
        .join(format!("day={}", r.started_at.utc_day()))
        .join(format!("classification={}", r.classification.as_deref().unwrap_or(UNCLASSIFIED)))
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn non_empty_json<T: serde::Serialize>(items: &[T]) -> Option<String> {
    (!items.is_empty()).then(|| json(&items))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The records (owned or borrowed) as one Arrow batch in [`schema`] order.
pub fn to_record_batch<R: std::borrow::Borrow<StoredRecord>>(records: &[R]) -> Result<RecordBatch, ArrowError> {
    let n = records.len();
    let mut strings: Vec<StringBuilder> = (0..17).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut ints: Vec<Int64Builder> = (0..6).map(|_| Int64Builder::with_capacity(n)).collect();
    let mut started = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ended = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut status = StringBuilder::with_capacity(n, n * 2);
    let mut error = StringBuilder::new();
    let mut action_ids = ListBuilder::new(StringBuilder::new());
    let mut attributes = StringBuilder::new();
    let mut hashes = StringBuilder::with_capacity(n, n * 64);
    for stored in records {
        let stored = stored.borrow();
        let r = &stored.record;
        let texts: [Option<String>; 17] = [
            Some(stored.id().to_owned()),
            Some(r.kind.as_str().to_owned()),
            Some(r.session_id.clone()),
            Some(r.process_id.clone()),
            r.parent_process_id.clone(),
            r.agent_name.clone(),
            r.trace_id.clone(),
            r.span_id.clone(),
            r.parent_span_id.clone(),
            r.provider.clone(),
            r.model.clone(),
            r.model_version.clone(),
            r.routing.as_ref().map(json),
            non_empty_json(&r.input),
            non_empty_json(&r.retrieved_context),
            non_empty_json(&r.output),
            non_empty_json(&r.tool_calls),
        ];
        for (builder, value) in strings.iter_mut().zip(texts) {
            builder.append_option(value);
        }
        let usage = r.usage.as_ref();
        let numbers = [
            usage.map(|u| clamp(u.input_tokens)),
            usage.map(|u| clamp(u.output_tokens)),
            usage.map(|u| clamp(u.cache_read_tokens)),
            usage.map(|u| clamp(u.reasoning_tokens)),
            r.latency_ms().map(clamp),
            r.time_to_first_token_ms.map(clamp),
        ];
        for (builder, value) in ints.iter_mut().zip(numbers) {
            builder.append_option(value);
        }
        started.append_value(r.started_at.unix_nanos());
        ended.append_option(r.ended_at.map(|t| t.unix_nanos()));
        status.append_value(match r.status {
            custody_model::RecordStatus::Ok => "ok",
            custody_model::RecordStatus::Error => "error",
        });
        error.append_option(r.error.as_deref());
        for id in &r.action_ids {
            action_ids.values().append_value(id);
        }
        action_ids.append(true);
        attributes.append_option(r.attributes.as_ref().map(json));
        hashes.append_value(hex::encode(stored.content_hash));
    }
    let mut columns: Vec<ArrayRef> = strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let mut ints = ints.into_iter();
    for _ in 0..4 {
        if let Some(mut b) = ints.next() {
            columns.push(Arc::new(b.finish()));
        }
    }
    columns.push(Arc::new(started.finish()));
    columns.push(Arc::new(ended.finish()));
    for mut b in ints {
        columns.push(Arc::new(b.finish()));
    }
    columns.push(Arc::new(status.finish()));
    columns.push(Arc::new(error.finish()));
    columns.push(Arc::new(action_ids.finish()));
    columns.push(Arc::new(attributes.finish()));
    columns.push(Arc::new(hashes.finish()));
    RecordBatch::try_new(schema(), columns)
}

/// Writes one batch as a new zstd-compressed file in `dir`, atomically; returns its
/// path. `flush` numbers the flush that wrote it (see [`flush_of`]).
pub fn write_file(dir: &Path, flush: u64, batch: &RecordBatch) -> Result<PathBuf, ParquetFileError> {
    let path = dir.join(file_name(flush));
    write_file_as(&path, batch)?;
    Ok(path)
}

/// A new data file name for flush number `flush`.
pub fn file_name(flush: u64) -> String {
    format!("part-{flush:020}-{}.parquet", uuid::Uuid::now_v7())
}

/// Writes one batch as a zstd-compressed file at `path`, atomically: under a
/// temporary name, fsynced, then renamed.
pub fn write_file_as(path: &Path, batch: &RecordBatch) -> Result<(), ParquetFileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part.parquet");
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// The flush number in a file name written by [`write_file`].
pub fn flush_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("part-")?.split('-').next()?.parse().ok()
}

/// Every data file under `root`, recursively.
pub fn data_files(root: &Path) -> Result<Vec<PathBuf>, ParquetFileError> {
    files_with_extension(root, "parquet")
}

/// Every file under `root` (recursively) whose extension is `extension`, sorted.
pub fn files_with_extension(root: &Path, extension: &str) -> Result<Vec<PathBuf>, ParquetFileError> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io(&dir))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == extension) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The record ids of one file, reading only that column.
pub fn read_ids(path: &Path) -> Result<Vec<String>, ParquetFileError> {
    let file = File::open(path).map_err(io(path))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?;
    let mask = parquet::arrow::ProjectionMask::leaves(builder.parquet_schema(), [0]);
    let mut ids = Vec::new();
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        if let Some(column) = batch.column_by_name("id").and_then(|c| c.as_string_opt::<i32>()) {
            ids.extend(column.iter().flatten().map(str::to_owned));
        }
    }
    Ok(ids)
}

/// Reads every batch of one file.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, ParquetFileError> {
    let file = File::open(path).map_err(io(path))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

/// A batch's columns by name, cast to the type the reader wants (query results
/// may come as views, dictionaries or other widths).
pub struct Columns<'a>(pub &'a RecordBatch);

impl Columns<'_> {
    fn cast(&self, name: &str, to: &DataType) -> Result<ArrayRef, ParquetFileError> {
        let column =
            self.0.column_by_name(name).ok_or_else(|| ParquetFileError::Damaged(format!("no column `{name}`")))?;
        Ok(arrow::compute::cast(column, to)?)
    }

    pub fn strings(&self, name: &str) -> Result<arrow::array::StringArray, ParquetFileError> {
        Ok(self.cast(name, &DataType::Utf8)?.as_string::<i32>().clone())
    }

    pub fn ints(&self, name: &str) -> Result<arrow::array::Int64Array, ParquetFileError> {
        Ok(self.cast(name, &DataType::Int64)?.as_primitive::<arrow::datatypes::Int64Type>().clone())
    }

    pub fn floats(&self, name: &str) -> Result<arrow::array::Float64Array, ParquetFileError> {
        Ok(self.cast(name, &DataType::Float64)?.as_primitive::<arrow::datatypes::Float64Type>().clone())
    }
}

/// Row `i` of a nullable text column.
pub fn text_at(array: &arrow::array::StringArray, i: usize) -> Option<String> {
    use arrow::array::Array;
    (!array.is_null(i)).then(|| array.value(i).to_owned())
}

/// Row `i` of a nullable count column (negative counts read as 0).
pub fn count_at(array: &arrow::array::Int64Array, i: usize) -> Option<u64> {
    use arrow::array::Array;
    (!array.is_null(i)).then(|| u64::try_from(array.value(i)).unwrap_or_default())
}

/// Reads records back from a batch in [`schema`] order plus a `classification`
/// column (the partition value), as queries return them. The record is exactly
/// the one ingested: its canonical form hashes to the stored content hash.
pub fn records_from_batch(
    batch: &RecordBatch,
    workspace: &custody_model::WorkspaceName,
) -> Result<Vec<StoredRecord>, ParquetFileError> {
    use arrow::array::{Array, StringArray};
    use custody_model::{RecordKind, RecordStatus, Timestamp, TraceRecord, trace::Usage};

    let damaged = |what: String| ParquetFileError::Damaged(what);
    let columns = Columns(batch);
    let strings = |name: &str| columns.strings(name);
    // Timestamps read as their nanoseconds.
    let ints = |name: &str| columns.ints(name);
    let times = |name: &str| columns.ints(name);
    let text = text_at;
    fn parse<T: serde::de::DeserializeOwned + Default>(
        array: &StringArray,
        i: usize,
        name: &str,
    ) -> Result<T, ParquetFileError> {
        if array.is_null(i) {
            return Ok(T::default());
        }
        serde_json::from_str(array.value(i)).map_err(|e| ParquetFileError::Damaged(format!("`{name}`: {e}")))
    }
    let [id, kind, session, process, parent, agent, trace_id, span_id, parent_span, provider, model, version] =
        ["id", "kind", "session_id", "process_id", "parent_process_id", "agent_name", "trace_id", "span_id"]
            .into_iter()
            .chain(["parent_span_id", "provider", "model", "model_version"])
            .map(strings)
            .collect::<Result<Vec<_>, _>>()?
            .try_into()
            .map_err(|_| damaged("columns".into()))?;
    let [routing, input, context, output, tools, status, error, attributes, hashes, classification] =
        ["routing", "input", "retrieved_context", "output", "tool_calls", "status", "error", "attributes"]
            .into_iter()
            .chain(["content_hash", "classification"])
            .map(strings)
            .collect::<Result<Vec<_>, _>>()?
            .try_into()
            .map_err(|_| damaged("columns".into()))?;
    let [input_tokens, output_tokens, cache_tokens, reasoning_tokens, ttft] =
        ["input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "time_to_first_token_ms"].map(ints);
    let (input_tokens, output_tokens, cache_tokens, reasoning_tokens, ttft) =
        (input_tokens?, output_tokens?, cache_tokens?, reasoning_tokens?, ttft?);
    let (started, ended) = (times("started_at")?, times("ended_at")?);
    let actions = batch
        .column_by_name("action_ids")
        .ok_or_else(|| damaged("no column `action_ids`".into()))?
        .as_list_opt::<i32>()
        .ok_or_else(|| damaged("`action_ids` is not a list".into()))?
        .clone();
    let unsigned = |n: i64| u64::try_from(n).unwrap_or_default();
    let mut records = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let usage = (!input_tokens.is_null(i)).then(|| Usage {
            input_tokens: unsigned(input_tokens.value(i)),
            output_tokens: unsigned(output_tokens.value(i)),
            cache_read_tokens: unsigned(cache_tokens.value(i)),
            reasoning_tokens: unsigned(reasoning_tokens.value(i)),
        });
        let action_values = arrow::compute::cast(&actions.value(i), &DataType::Utf8)?;
        let action_ids = action_values.as_string::<i32>().iter().flatten().map(str::to_owned).collect();
        let record = TraceRecord {
            id: text(&id, i),
            workspace: workspace.clone(),
            classification: text(&classification, i).filter(|c| c != UNCLASSIFIED),
            kind: RecordKind::parse(kind.value(i)).ok_or_else(|| damaged(format!("kind `{}`", kind.value(i))))?,
            session_id: session.value(i).to_owned(),
            process_id: process.value(i).to_owned(),
            parent_process_id: text(&parent, i),
            agent_name: text(&agent, i),
            trace_id: text(&trace_id, i),
            span_id: text(&span_id, i),
            parent_span_id: text(&parent_span, i),
            provider: text(&provider, i),
            model: text(&model, i),
            model_version: text(&version, i),
            routing: (!routing.is_null(i)).then(|| parse(&routing, i, "routing")).transpose()?,
            input: parse(&input, i, "input")?,
            retrieved_context: parse(&context, i, "retrieved_context")?,
            output: parse(&output, i, "output")?,
            tool_calls: parse(&tools, i, "tool_calls")?,
            usage,
            started_at: Timestamp::from_unix_nanos(started.value(i)),
            ended_at: (!ended.is_null(i)).then(|| Timestamp::from_unix_nanos(ended.value(i))),
            time_to_first_token_ms: count_at(&ttft, i),
            status: if status.value(i) == "error" { RecordStatus::Error } else { RecordStatus::Ok },
            error: text(&error, i),
            action_ids,
            attributes: (!attributes.is_null(i)).then(|| parse(&attributes, i, "attributes")).transpose()?,
        };
        let mut content_hash = [0u8; 32];
        hex::decode_to_slice(hashes.value(i), &mut content_hash)
            .map_err(|_| damaged(format!("content hash `{}`", hashes.value(i))))?;
        records.push(StoredRecord { record, content_hash });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};
    use custody_model::TraceRecord;
    use serde_json::json;

    fn record(n: u64, classification: Option<&str>) -> StoredRecord {
        let mut value = json!({"workspace": "acme", "kind": "model_call", "session_id": "sess-9",
            "process_id": format!("proc-{}", n % 3), "parent_process_id": "proc-root", "agent_name": "drafter",
            "provider": "openai", "model": "gpt-4o", "model_version": "gpt-4o-2024-08-06",
            "routing": {"router": "default"},
            "input": [{"role": "user", "content": format!("question {n}")}],
            "output": [{"role": "assistant", "content": "answer"}],
            "usage": {"input_tokens": 100 + n, "output_tokens": 10},
            "started_at": "2026-12-01T09:59:58.12Z", "ended_at": "2026-12-01T09:59:59.87Z",
            "action_ids": ["act-1", "act-2"], "attributes": {"temperature": 0.2}});
        if let Some(c) = classification {
            value["classification"] = json!(c);
        }
        StoredRecord::prepare(TraceRecord::from_value(value).unwrap())
    }

    #[test]
    fn records_go_to_their_partition_and_read_back_column_for_column() {
        let dir = tempfile::tempdir().unwrap();
        let records: Vec<StoredRecord> = (0..5).map(|n| record(n, Some("confidential"))).collect();
        let part = partition(&records[0]);
        assert_eq!(part, PathBuf::from("workspace=acme/day=2026-12-01/classification=confidential"));
        assert_eq!(
            partition(&record(0, None)),
            PathBuf::from("workspace=acme/day=2026-12-01/classification=unclassified")
        );
        let batch = to_record_batch(&records).unwrap();
        let path = write_file(&dir.path().join(&part), 7, &batch).unwrap();
        assert!(path.starts_with(dir.path().join(&part)));
        assert_eq!(flush_of(&path), Some(7));
        assert_eq!(data_files(dir.path()).unwrap(), vec![path.clone()]);
        assert_eq!(read_ids(&path).unwrap(), records.iter().map(|r| r.id().to_owned()).collect::<Vec<_>>());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(&part)).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file stays behind");
        let back = read_file(&path).unwrap();
        assert_eq!(back.len(), 1);
        let back = &back[0];
        assert_eq!(back, &batch);
        assert_eq!(back.num_rows(), 5);
        let ids = back.column_by_name("id").unwrap().as_string::<i32>();
        assert_eq!(ids.value(3), records[3].id());
        let tokens = back.column_by_name("input_tokens").unwrap().as_primitive::<Int64Type>();
        assert_eq!(tokens.value(4), 104);
        let latency = back.column_by_name("latency_ms").unwrap().as_primitive::<Int64Type>();
        assert_eq!(latency.value(0), 1750);
        let started = back.column_by_name("started_at").unwrap().as_primitive::<TimestampNanosecondType>();
        assert_eq!(started.value(0), records[0].record.started_at.unix_nanos());
        let hashes = back.column_by_name("content_hash").unwrap().as_string::<i32>();
        assert_eq!(hashes.value(2), hex::encode(records[2].content_hash));
        let input = back.column_by_name("input").unwrap().as_string::<i32>();
        assert_eq!(input.value(1), r#"[{"role":"user","content":"question 1"}]"#);
        assert!(back.column_by_name("retrieved_context").unwrap().is_null(0));
        let actions = back.column_by_name("action_ids").unwrap().as_list::<i32>();
        assert_eq!(actions.value(0).as_string::<i32>().value(1), "act-2");
    }
}
