//! Compaction: the small files a partition collects (one per flush) merged into
//! one, keeping one row per record id.
//!
//! Crash safety. Before anything is written, a plan `<new file>.compacting`
//! names the file to be written and the files it replaces. Then the new file is
//! written (atomically, like every data file), then the old files are deleted,
//! then the plan. On start, [`recover`] finishes or undoes what a crash
//! interrupted: if the new file exists it is complete, so the old files go; if
//! not, nothing was replaced and the plan goes. No record is lost or doubled.
//!
//! Only files of finished flushes are compacted (their flush number is at most
//! the flush marker), so a file of a flush that a crash leaves unfinished is
//! never mixed into a compacted one.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, BooleanArray};
use arrow::compute::{concat_batches, filter_record_batch};

use crate::parquet_files::{
    ParquetFileError, data_files, file_name, files_with_extension, flush_of, read_file, schema, write_file_as,
};

const PLAN_SUFFIX: &str = "compacting";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub partitions: usize,
    pub files_in: usize,
    pub rows_in: usize,
    pub rows_out: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ParquetFileError + '_ {
    move |source| ParquetFileError::Io { path: path.display().to_string(), source }
}

/// Merges, in every partition under `data_dir`, the files smaller than
/// `small_file_bytes` whose flush number is at most `flushed_through`.
pub fn compact(
    data_dir: &Path,
    flushed_through: u64,
    small_file_bytes: u64,
) -> Result<CompactionReport, ParquetFileError> {
    let mut by_partition: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in data_files(data_dir)? {
        let small = std::fs::metadata(&file).map_err(io(&file))?.len() < small_file_bytes;
        if small
            && flush_of(&file).is_some_and(|f| f <= flushed_through)
            && let Some(dir) = file.parent()
        {
            by_partition.entry(dir.to_path_buf()).or_default().push(file);
        }
    }
    let mut report = CompactionReport::default();
    for (dir, files) in by_partition.into_iter().filter(|(_, files)| files.len() > 1) {
        let (rows_in, rows_out) = compact_partition(&dir, &files)?;
        report.partitions += 1;
        report.files_in += files.len();
        report.rows_in += rows_in;
        report.rows_out += rows_out;
    }
    Ok(report)
}

fn compact_partition(dir: &Path, files: &[PathBuf]) -> Result<(usize, usize), ParquetFileError> {
    let mut batches = Vec::new();
    for file in files {
        batches.extend(read_file(file)?);
    }
    let merged = concat_batches(&schema(), &batches)?;
    let ids = merged.column(0).as_string::<i32>();
    let mut seen = HashSet::new();
    let keep: BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| seen.insert(id.to_owned())))).collect();
    let kept = filter_record_batch(&merged, &keep)?;
    let flush = files.iter().filter_map(|f| flush_of(f)).max().unwrap_or(0);
    // The plan first: it names the new file before the file exists.
    let new_file = dir.join(file_name(flush));
    let plan = new_file.with_extension(format!("parquet.{PLAN_SUFFIX}"));
    let listing: String = files.iter().filter_map(|f| f.file_name()?.to_str()).map(|n| format!("{n}\n")).collect();
    write_durably(&plan, &listing)?;
    write_file_as(&new_file, &kept)?;
    for file in files {
        std::fs::remove_file(file).map_err(io(file))?;
    }
    sync_dir(dir)?;
    std::fs::remove_file(&plan).map_err(io(&plan))?;
    sync_dir(dir)?;
    Ok((merged.num_rows(), kept.num_rows()))
}

/// Finishes or undoes the compactions a crash interrupted.
pub fn recover(data_dir: &Path) -> Result<usize, ParquetFileError> {
    let plans = files_with_extension(data_dir, PLAN_SUFFIX)?;
    for plan in &plans {
        let dir = plan.parent().unwrap_or(data_dir);
        let new_file = plan.with_extension("");
        if new_file.exists() {
            let listing = std::fs::read_to_string(plan).map_err(io(plan))?;
            for name in listing.lines().filter(|l| !l.is_empty()) {
                let old = dir.join(name);
                if old.exists() {
                    std::fs::remove_file(&old).map_err(io(&old))?;
                }
            }
        }
        sync_dir(dir)?;
        std::fs::remove_file(plan).map_err(io(plan))?;
        sync_dir(dir)?;
    }
    Ok(plans.len())
}

fn write_durably(path: &Path, text: &str) -> Result<(), ParquetFileError> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), ParquetFileError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
