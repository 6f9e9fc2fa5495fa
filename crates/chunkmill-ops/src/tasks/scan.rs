//! The scan task of `virtualize` on executors (see [`crate::virtualize`]): scans a slice of
//! the input list and writes one result object per file.

use chunkmill_exec::{Cancel, TaskError, TaskStats};
use chunkmill_manifest::{scan_input, Input, ScanOptions};
use chunkmill_plan::ScanStage;
use chunkmill_store::Store;
use serde_json::json;

/// Scans inputs `files` (a task's region, `Stage::task_region`) of a scan stage.
///
/// # Errors
/// The input list or a result cannot be read or written.
pub(crate) fn run_scan_task(
    stage: &ScanStage,
    files: std::ops::Range<u64>,
    cancel: &Cancel,
) -> Result<TaskStats, TaskError> {
    let (list_dir, list_key) = super::references::split_url(&stage.inputs_url);
    let list = Store::open(list_dir)
        .and_then(|s| s.get(list_key))
        .map_err(TaskError::failed)?
        .ok_or_else(|| {
            TaskError::failed(format!(
                "{}: the list of inputs is missing",
                stage.inputs_url
            ))
        })?;
    let list = String::from_utf8_lossy(&list);
    let inputs: Vec<&str> = list.lines().collect();
    let out = Store::open(&stage.output_url).map_err(TaskError::failed)?;
    let options = ScanOptions {
        inline_threshold: stage.inline_threshold,
        load: stage.load.clone(),
        native_filters: false,
        // The driver leaves dropped variables out of every file's result.
        drop: Vec::new(),
    };
    let mut stats = TaskStats::default();
    for index in files {
        if cancel.is_cancelled() {
            return Err(TaskError::Superseded);
        }
        let line = inputs
            .get(index as usize)
            .ok_or_else(|| TaskError::failed(format!("{}: no input {index}", stage.inputs_url)))?;
        let input = Input::parse(line);
        let result = match scan_input(&input, &options) {
            Ok(scan) => {
                let mut text = Vec::new();
                chunkmill_manifest::kerchunk::to_kerchunk_json(&scan.dataset, &mut text)
                    .map_err(TaskError::failed)?;
                json!({
                    "references": String::from_utf8_lossy(&text),
                    "warnings": scan.warnings,
                    "skipped_variables": scan.skipped.iter().map(|v| json!({
                        "variable": v.variable, "reason": v.reason,
                    })).collect::<Vec<_>>(),
                    "unlimited": scan.unlimited,
                })
            }
            Err(e) => json!({ "error": e.to_string() }),
        };
        let bytes = serde_json::to_vec(&result).map_err(TaskError::failed)?;
        stats.bytes_written += bytes.len() as u64;
        out.put(&format!("{index}.json"), bytes)
            .map_err(TaskError::failed)?;
    }
    Ok(stats)
}
