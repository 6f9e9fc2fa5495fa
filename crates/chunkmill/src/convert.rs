//! `chunkmill convert` and `chunkmill plan convert`.

use chunkmill_ops::convert::{plan_convert, run_planned, ConvertJob, ConvertOptions};
use chunkmill_ops::job::JobReport;
use chunkmill_ops::spec::ChunkSpec;

use crate::args::ConvertArgs;
use crate::failure::Footprint;
use crate::rechunk::{announce_budget, plan_json, print_plan, print_report, run_hooked, Hooks};
use crate::resolve::{self, BudgetOrigin};
use crate::Failure;

/// Decisions taken for the user (an inferred concat dimension), on stderr.
fn print_notes(job: &ConvertJob, quiet: bool) {
    if !quiet {
        for note in &job.notes {
            eprintln!("chunkmill: {note}");
        }
    }
}

fn warn_misaligned(job: &ConvertJob, quiet: bool) {
    if quiet {
        return;
    }
    for m in &job.misaligned {
        eprintln!(
            "chunkmill: warning: {}: the selection cuts through source chunks and reads {:.2}× what it keeps; nearest aligned: {}",
            m.array, m.amplification, m.suggestion
        );
    }
}

/// A `--chunks` or `--shards` spec naming a dimension no converted array has (a typo, most
/// often) is refused, as `rechunk` refuses it, instead of being ignored. The specs name the
/// target's dimensions, so a renamed dimension goes by its new name.
fn check_spec_names(opts: &ConvertOptions, job: &ConvertJob) -> Result<(), Failure> {
    if job.job.existing_target {
        // An append writes the target's chunks, whatever the spec says.
        return Ok(());
    }
    let known: Vec<&str> = job
        .job
        .specs
        .iter()
        .flat_map(|s| s.dimension_names.iter().flatten().flatten())
        .map(String::as_str)
        .collect();
    for (flag, spec) in [
        ("--chunks", Some(&opts.layout.chunks)),
        ("--shards", opts.layout.shards.as_ref()),
    ] {
        let Some(ChunkSpec::ByName(named)) = spec else {
            continue;
        };
        if let Some((name, _)) = named.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            let mut dims: Vec<&str> = known.clone();
            dims.sort_unstable();
            dims.dedup();
            let renamed = opts
                .rename
                .iter()
                .find(|(old, _)| old == name)
                .map(|(_, new)| format!(" ('{name}' is renamed to '{new}': name it {new})"))
                .unwrap_or_default();
            return Err(Failure::usage(format!(
                "{flag}: no dimension '{name}' in the arrays to convert{renamed}; dimensions: {}",
                dims.join(", ")
            )));
        }
    }
    Ok(())
}

/// `chunkmill plan convert`.
pub fn plan(a: &ConvertArgs) -> Result<(), Failure> {
    let (opts, origin) = resolve::convert(a)?;
    let job = plan_convert(&opts)?;
    check_spec_names(&opts, &job)?;
    // Refused here exactly when the run would refuse it.
    chunkmill_ops::job::admit(&job.job.plan)?;
    print_notes(&job, a.common.report.quiet);
    if a.common.report.json {
        crate::print_json(&plan_value(&job, origin)?)?;
    } else {
        print_plan(&job.job, origin);
        if let Some((c, from)) = &job.costs {
            println!(
                "cost model ({from}; MB/s, {}): decode zlib {:.0}, zstd {:.0}, lz4 {:.0}, unshuffle {:.0}; encode lz4 {:.0}, zstd-1 {:.0}; pieces write {:.0}, read {:.0}",
                chunkmill_ops::job::costs::COSTS_ENV,
                c.zlib_decode, c.zstd_decode, c.lz4_decode, c.shuffle, c.lz4_encode, c.zstd1_encode, c.write, c.read
            );
        }
        for m in &job.misaligned {
            println!(
                "read amplification {:.2}× for {}; nearest aligned: {}",
                m.amplification, m.array, m.suggestion
            );
        }
    }
    Ok(())
}

/// What `chunkmill plan convert --json` prints.
fn plan_value(job: &ConvertJob, origin: BudgetOrigin) -> Result<serde_json::Value, Failure> {
    let mut value = plan_json(&job.job);
    value["max_mem_origin"] = serde_json::json!(origin.name());
    value["misaligned"] = serde_json::to_value(&job.misaligned)
        .map_err(|e| Failure::failed(format!("writing the JSON output: {e}")))?;
    value["notes"] = serde_json::json!(job.notes);
    if let Some((c, from)) = &job.costs {
        value["cost_model"] = serde_json::json!({"coefficients": c, "origin": from});
    }
    Ok(value)
}

/// The plan of a conversion as `plan convert --json` gives it, without printing anything.
pub fn plan_only(a: &ConvertArgs) -> Result<serde_json::Value, Failure> {
    let (opts, origin) = resolve::convert(a)?;
    let job = plan_convert(&opts)?;
    check_spec_names(&opts, &job)?;
    plan_value(&job, origin)
}

/// `chunkmill convert`.
pub fn run(a: &ConvertArgs) -> Result<(), Failure> {
    let (report, verb, target) = match execute(a, &Hooks::default())? {
        Converted::NothingNew(message) => {
            if !a.common.report.quiet {
                println!("{message}");
            }
            return Ok(());
        }
        Converted::Ran {
            report,
            appended,
            target,
        } => (
            report,
            if appended { "appended" } else { "converted" },
            target,
        ),
    };
    print_report(&report, verb, &target, a.plan.prepare, &a.common)?;
    Ok(())
}

/// How a conversion ended.
pub enum Converted {
    /// It ran (or found its work done): its report, whether it appended, and the target.
    Ran {
        report: JobReport,
        appended: bool,
        target: String,
    },
    /// An append found nothing new to add: the message saying so.
    NothingNew(String),
}

/// Runs a conversion as the command does; `hooks` may replace the progress bar and messages
/// and stop the run.
pub fn execute(a: &ConvertArgs, hooks: &Hooks<'_>) -> Result<Converted, Failure> {
    let (mut opts, origin) = resolve::convert(a)?;
    opts.job.interrupt = hooks.interrupt.clone();
    resolve::watch_interrupts(&mut opts.job.executor, hooks.interrupt.as_ref())?;
    let job = plan_convert(&opts)?;
    check_spec_names(&opts, &job)?;
    let quiet = a.common.report.quiet || hooks.on_event.is_some();
    print_notes(&job, quiet);
    if !quiet {
        // After planning, so that a refused job prints its one error line only.
        announce_budget(opts.job.max_mem, origin, &a.common);
    }
    let job = crate::resume::reconcile(
        job,
        &opts.job,
        || resolve::stored_plan(&opts.job.target, &a.common),
        |j| &j.job.plan,
        |w| {
            let mut o = opts.clone();
            o.job.workers = w;
            Ok(plan_convert(&o)?)
        },
    )?;
    warn_misaligned(&job, quiet || a.common.report.json);
    if let Some(message) = &job.nothing_new {
        return Ok(Converted::NothingNew(message.clone()));
    }
    let target = &opts.job.target;
    let footprint = Footprint::before(&[target, &resolve::work_dir(target, &a.common)]);
    let report = run_hooked(&job.job, &a.common, hooks, |on_event| {
        run_planned(&job, &opts, on_event)
    })
    .map_err(|e| footprint.judge(e))?;
    Ok(Converted::Ran {
        report,
        appended: opts.append.is_some(),
        target: target.clone(),
    })
}
