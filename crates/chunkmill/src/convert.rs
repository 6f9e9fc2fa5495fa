//! `chunkmill convert` and `chunkmill plan convert`.

use chunkmill_ops::convert::{
    default_codec, plan_convert, run_planned, ConvertJob, ConvertOptions, IndexSelection,
    ValueSelection,
};
use chunkmill_ops::spec::ChunkSpec;

use crate::args::ConvertArgs;
use crate::rechunk::{
    announce_budget, origin_name, plan_json, print_plan, print_report, refuse_duplicates,
    resolve_budget, run_options, run_with_progress, stored_plan,
};
use crate::Failure;

fn split_pair<'a>(flag: &str, text: &'a str, form: &str) -> Result<(&'a str, &'a str), Failure> {
    text.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| Failure::usage(format!("{flag} '{text}': expected {form}")))
}

fn split_range<'a>(
    flag: &str,
    text: &'a str,
    form: &str,
) -> Result<(&'a str, Option<&'a str>, Option<&'a str>), Failure> {
    let (dim, range) = split_pair(flag, text, form)?;
    // Times hold colons too (`2020-01-02T05:30:2020-01-02T07:45`): the separator is the one
    // colon that leaves a plausible bound on each side.
    let splits: Vec<(&str, &str)> = range
        .match_indices(':')
        .map(|(i, _)| (&range[..i], &range[i + 1..]))
        .filter(|(a, b)| plausible_bound(a) && plausible_bound(b))
        .collect();
    let [(start, stop)] = splits.as_slice() else {
        return Err(Failure::usage(format!("{flag} '{text}': expected {form}")));
    };
    let some = |s: &'a str| (!s.trim().is_empty()).then_some(s.trim());
    Ok((dim, some(start), some(stop)))
}

/// Empty, a number, or a date whose day part has no colon and whose time part (after `T` or
/// a space) holds only digits, colons and a fraction.
fn plausible_bound(text: &str) -> bool {
    let text = text.trim();
    if text.is_empty() || text.parse::<f64>().is_ok() {
        return true;
    }
    let (day, time) = text
        .trim_end_matches('Z')
        .split_once(['T', ' '])
        .unwrap_or((text, ""));
    !day.contains(':')
        && time
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '.')
}

/// The name before `=` of `NAME=VALUE`, or the whole text.
fn key(text: &str) -> &str {
    text.split_once('=').map_or(text, |(k, _)| k).trim()
}

/// Repeated names in the repeatable flags: the same variable reversed, dropped, renamed or cast
/// twice, or a dimension selected twice (by value or by index), is refused before anything is
/// opened.
fn refuse_repeated(a: &ConvertArgs) -> Result<(), Failure> {
    refuse_duplicates("--reverse", a.reverse.iter().map(String::as_str))?;
    refuse_duplicates("--drop", a.drop.iter().map(String::as_str))?;
    refuse_duplicates(
        "--variables",
        a.variables
            .iter()
            .map(String::as_str)
            .filter(|v| !v.is_empty()),
    )?;
    refuse_duplicates("--rename", a.rename.iter().map(|t| key(t)))?;
    refuse_duplicates("--cast", a.cast.iter().map(|t| key(t)))?;
    refuse_duplicates(
        "--select/--isel of dimension",
        a.select.iter().chain(&a.isel).map(|t| key(t)),
    )
}

/// `--compat MODE` (clap checks the word; a recipe's is checked here).
pub(crate) fn compat(mode: Option<&str>) -> Result<chunkmill_manifest::Compat, Failure> {
    mode.map_or(Ok(chunkmill_manifest::Compat::Equals), |m| {
        m.parse()
            .map_err(|e| Failure::usage(format!("--compat {e}")))
    })
}

fn options(a: &ConvertArgs) -> Result<ConvertOptions, Failure> {
    refuse_repeated(a)?;
    if a.stack && a.concat_dim.is_none() {
        return Err(Failure::usage(
            "--stack needs --concat-dim NAME: the new dimension to stack the files along",
        ));
    }
    if a.allow_gap && a.append.is_none() {
        return Err(Failure::usage("--allow-gap is for --append DIM"));
    }
    let (target, inputs) = a
        .paths
        .split_last()
        .filter(|(_, inputs)| !inputs.is_empty())
        .ok_or_else(|| Failure::usage("give the inputs, then the target (or a --recipe)"))?;
    if a.plan.chunks.is_none() {
        return Err(Failure::usage(
            "--chunks is required (here or in the recipe): the target's chunks, like time=-1,lat=10,lon=10",
        ));
    }
    let mut run = run_options(
        &chunkmill_ops::convert::sources::describe(inputs),
        target,
        &[],
        &a.plan,
        &a.common,
    )?;
    if run.layout.codec.is_none() {
        run.layout.codec = Some(default_codec());
    }
    let select = a
        .select
        .iter()
        .map(|s| {
            let (dim, start, stop) = split_range("--select", s, "DIM=START:STOP, like lat=-30:30")?;
            Ok(ValueSelection {
                dim: dim.to_string(),
                start: start.map(str::to_string),
                stop: stop.map(str::to_string),
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let isel = a
        .isel
        .iter()
        .map(|s| {
            let form = "DIM=I:J, like time=0:24";
            let (dim, start, stop) = split_range("--isel", s, form)?;
            let index = |v: Option<&str>| {
                v.map(str::parse::<i64>)
                    .transpose()
                    .map_err(|_| Failure::usage(format!("--isel '{s}': expected {form}")))
            };
            Ok(IndexSelection {
                dim: dim.to_string(),
                start: index(start)?,
                stop: index(stop)?,
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let pairs = |flag: &str, items: &[String], form: &str| {
        items
            .iter()
            .map(|t| split_pair(flag, t, form).map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<Result<Vec<_>, Failure>>()
    };
    Ok(ConvertOptions {
        inputs: inputs.to_vec(),
        layout: run.layout,
        job: run.job,
        variables: a
            .variables
            .iter()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect(),
        drop: a.drop.clone(),
        select,
        isel,
        reverse: a.reverse.clone(),
        rename: pairs("--rename", &a.rename, "OLD=NEW")?,
        decode_cf: a.decode_cf,
        cast: pairs("--cast", &a.cast, "VAR=DTYPE, like air=float32")?,
        concat_dim: a.concat_dim.clone(),
        identical_dims: a
            .identical_dims
            .as_deref()
            .map(|d| {
                d.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        stack: a.stack,
        compat: compat(a.compat.as_deref())?,
        strict_alignment: a.strict_alignment,
        append: a.append.clone(),
        allow_gap: a.allow_gap,
        allow_refs: a.allow_refs.clone(),
        tile: a
            .tile
            .as_deref()
            .map(|spec| {
                spec.split(',')
                    .map(|part| {
                        let (dim, size) =
                            split_pair("--tile", part, "DIM=SIZE,…, like lat=32,lon=32")?;
                        let size = size.parse::<u64>().map_err(|_| {
                            Failure::usage(format!("--tile '{spec}': {size} is not a tile size"))
                        })?;
                        Ok((dim.to_string(), size))
                    })
                    .collect::<Result<Vec<_>, Failure>>()
                    .and_then(|tiles| {
                        match tiles
                            .iter()
                            .enumerate()
                            .find(|(i, (dim, _))| tiles[..*i].iter().any(|(d, _)| d == dim))
                        {
                            Some((_, (dim, _))) => Err(Failure::usage(format!(
                                "--tile '{spec}': {dim} is given twice"
                            ))),
                            None => Ok(tiles),
                        }
                    })
            })
            .transpose()?
            .unwrap_or_default(),
    })
}

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
    let a = &crate::recipe::apply(a)?;
    let opts = options(a)?;
    let job = plan_convert(&opts)?;
    check_spec_names(&opts, &job)?;
    print_notes(&job, a.common.report.quiet);
    let target = a.paths.last().map_or("", String::as_str);
    let (_, origin) = resolve_budget(target, &a.plan, &a.common)?;
    if a.common.report.json {
        let mut value = plan_json(&job.job);
        value["max_mem_origin"] = serde_json::json!(origin_name(origin));
        value["misaligned"] = serde_json::to_value(&job.misaligned).unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print_plan(&job.job, origin);
        for m in &job.misaligned {
            println!(
                "read amplification {:.2}× for {}; nearest aligned: {}",
                m.amplification, m.array, m.suggestion
            );
        }
    }
    Ok(())
}

/// `chunkmill convert`.
pub fn run(a: &ConvertArgs) -> Result<(), Failure> {
    let a = &crate::recipe::apply(a)?;
    let opts = options(a)?;
    let (_, origin) = resolve_budget(&opts.job.target, &a.plan, &a.common)?;
    let job = plan_convert(&opts)?;
    check_spec_names(&opts, &job)?;
    print_notes(&job, a.common.report.quiet);
    // After planning, so that a refused job prints its one error line only.
    announce_budget(opts.job.max_mem, origin, &a.common);
    let job = if opts.job.resume && !opts.job.overwrite {
        crate::resume::reconcile(
            job,
            stored_plan(&opts.job.target, &a.common).as_ref(),
            opts.job.workers,
            |j| &j.job.plan,
            |w| {
                let mut o = opts.clone();
                o.job.workers = w;
                Ok(plan_convert(&o)?)
            },
        )?
    } else {
        job
    };
    warn_misaligned(&job, a.common.report.quiet || a.common.report.json);
    if let Some(message) = &job.nothing_new {
        if !a.common.report.quiet {
            println!("{message}");
        }
        return Ok(());
    }
    let report = run_with_progress(&job.job, &a.common, |on_event| {
        run_planned(&job, &opts, on_event)
    })?;
    let verb = if opts.append.is_some() {
        "appended"
    } else {
        "converted"
    };
    print_report(&report, verb, &opts.job.target, a.plan.prepare, &a.common);
    Ok(())
}
