//! `chunkmill compute` (and `plan compute`) resolved: the inputs, the script (arguments, then
//! `--script`), output chunks by dimension name, and the run options of its output.

use std::collections::BTreeMap;

use chunkmill_compute::InputSpec;
use chunkmill_ops::compute::ComputeOptions;
use chunkmill_ops::spec::ChunkSpec;

use super::{refuse_duplicates, run_options, BudgetOrigin};
use crate::args::ComputeArgs;
use crate::Failure;

/// `--input NAME=URL[#ARRAY]`, each name once.
pub fn inputs(texts: &[String]) -> Result<Vec<InputSpec>, Failure> {
    if texts.is_empty() {
        return Err(Failure::usage(
            "compute: give at least one --input NAME=URL[#ARRAY]",
        ));
    }
    let specs = texts
        .iter()
        .map(|t| InputSpec::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    refuse_duplicates("--input of name", specs.iter().map(|s| s.name.as_str()))?;
    Ok(specs)
}

/// The assignments given as arguments, one per line, then the lines of `--script FILE`.
pub fn script(assignments: &[String], file: Option<&str>) -> Result<String, Failure> {
    let mut script = assignments.join("\n");
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::usage(format!("--script {file}: {e}")))?;
        if !script.is_empty() {
            script.push('\n');
        }
        script.push_str(&text);
    }
    Ok(script)
}

/// `--chunks time=10,lat=-1`: output chunks by dimension name (`-1`: the whole dimension);
/// chunks by axis mean nothing for outputs of different dimensions and are refused.
pub fn chunks(text: Option<&str>) -> Result<BTreeMap<String, u64>, Failure> {
    let mut chunks = BTreeMap::new();
    match super::chunks(text)? {
        ChunkSpec::ByName(named) => {
            for (dim, size) in named {
                chunks.insert(dim, size.unwrap_or(u64::MAX));
            }
        }
        ChunkSpec::ByAxis(_) => {
            return Err(Failure::usage(format!(
                "--chunks '{}': compute names dimensions, like time=10,lat=25",
                text.unwrap_or_default()
            )));
        }
    }
    Ok(chunks)
}

/// `chunkmill compute` resolved: its options and where the budget came from.
pub fn compute(a: &ComputeArgs) -> Result<(ComputeOptions, BudgetOrigin), Failure> {
    if a.plan.shards.is_some() {
        return Err(Failure::usage(
            "compute: --shards is not supported by compute yet",
        ));
    }
    let inputs = inputs(&a.inputs)?;
    let script = script(&a.assignments, a.script.as_deref())?;
    let chunks = chunks(a.plan.chunks.as_deref())?;
    let mut plan = a.plan.clone();
    plan.chunks = None;
    let (layout, job, origin) = run_options(&a.output, &plan, &a.common)?;
    let options = ComputeOptions {
        inputs,
        script,
        chunks,
        codec: layout.codec,
        zarr_format: layout.zarr_format,
        job,
    };
    Ok((options, origin))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};
    use crate::resolve::tests::assert_usage;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// `compute --output o.zarr --max-mem 64MB` plus `extra`, resolved.
    fn compute_with(extra: &[&str]) -> Result<ComputeOptions, Failure> {
        let mut words = vec![
            "chunkmill",
            "compute",
            "--output",
            "o.zarr",
            "--max-mem",
            "64MB",
        ];
        words.extend(extra);
        match Cli::try_parse_from(words).map(|c| c.command) {
            Ok(Command::Compute(a)) => compute(&a).map(|(o, _)| o),
            other => Err(Failure::failed(format!("not compute: {other:?}"))),
        }
    }

    #[test]
    fn input_names_one_array_or_a_whole_store() -> TestResult {
        let o = compute_with(&[
            "--input",
            "a=in.zarr#air",
            "--input",
            "ds=s3://b/x.zarr",
            "m = a",
        ])?;
        assert_eq!(
            o.inputs,
            [
                InputSpec {
                    name: "a".into(),
                    url: "in.zarr".into(),
                    array: Some("air".into())
                },
                InputSpec {
                    name: "ds".into(),
                    url: "s3://b/x.zarr".into(),
                    array: None
                }
            ]
        );
        assert_usage(compute_with(&["m = 1"]), &["--input NAME=URL"]);
        assert_usage(
            compute_with(&["--input", "in.zarr", "m = 1"]),
            &["'in.zarr'", "NAME=URL"],
        );
        assert_usage(
            compute_with(&["--input", "1x=in.zarr", "m = 1"]),
            &["'1x' is not a name"],
        );
        assert_usage(compute_with(&["--input", "a=", "m = 1"]), &["no URL"]);
        assert_usage(
            compute_with(&["--input", "a=x.zarr", "--input", "a=y.zarr", "m = 1"]),
            &["--input of name a is given twice"],
        );
        Ok(())
    }

    #[test]
    fn script_from_arguments_then_file() -> TestResult {
        let o = compute_with(&["--input", "a=x.zarr", "m = a", "n = m * 2"])?;
        assert_eq!(o.script, "m = a\nn = m * 2");
        let dir = std::env::temp_dir().join(format!("chunkmill-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("s.txt");
        std::fs::write(&file, "p = n + 1\n")?;
        let path = file.display().to_string();
        let o = compute_with(&["--input", "a=x.zarr", "m = a", "--script", &path]);
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(o?.script, "m = a\np = n + 1\n");
        let missing = dir.join("none.txt").display().to_string();
        assert_usage(
            compute_with(&["--input", "a=x.zarr", "--script", &missing]),
            &["--script", "none.txt"],
        );
        Ok(())
    }

    #[test]
    fn chunks_by_name_whole_and_by_axis_refused() -> TestResult {
        let o = compute_with(&["--input", "a=x.zarr", "m = a", "--chunks", "time=10,lat=-1"])?;
        assert_eq!(
            o.chunks,
            BTreeMap::from([("time".to_string(), 10), ("lat".to_string(), u64::MAX)])
        );
        assert!(compute_with(&["--input", "a=x.zarr", "m = a"])?
            .chunks
            .is_empty());
        assert_usage(
            compute_with(&["--input", "a=x.zarr", "m = a", "--chunks", "10,20"]),
            &["'10,20'", "names dimensions"],
        );
        assert_usage(
            compute_with(&["--input", "a=x.zarr", "m = a", "--shards", "time=20"]),
            &["--shards"],
        );
        Ok(())
    }

    #[test]
    fn output_format_codec_and_budget() -> TestResult {
        let o = compute_with(&[
            "--input",
            "a=x.zarr",
            "m = a",
            "--zarr-format",
            "2",
            "--codec",
            "gzip:5",
        ])?;
        assert_eq!(o.zarr_format, 2);
        assert!(o.codec.is_some());
        assert_eq!(o.job.max_mem, 64_000_000);
        assert_eq!(o.job.target, "o.zarr");
        assert_usage(
            compute_with(&["--input", "a=x.zarr", "m = a", "--codec", "lz9"]),
            &["--codec"],
        );
        Ok(())
    }
}
