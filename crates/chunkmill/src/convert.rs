//! `chunkmill convert` and `chunkmill plan convert`.

use chunkmill_ops::convert::{
    default_codec, plan_convert, run_planned, ConvertJob, ConvertOptions, IndexSelection,
    ValueSelection,
};

use crate::args::ConvertArgs;
use crate::rechunk::{plan_json, print_plan, print_report, run_options, run_with_progress};
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

fn options(a: &ConvertArgs) -> Result<ConvertOptions, Failure> {
    let (target, inputs) = a
        .paths
        .split_last()
        .filter(|(_, inputs)| !inputs.is_empty())
        .ok_or_else(|| Failure::usage("give the inputs, then the target (or a --recipe)"))?;
    let mut run = run_options(
        &chunkmill_ops::sources::describe(inputs),
        target,
        &[],
        &a.plan,
        &a.common,
    )?;
    if run.codec.is_none() {
        run.codec = Some(default_codec());
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
        run,
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
        strict_alignment: a.strict_alignment,
        append: a.append.clone(),
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

/// `chunkmill plan convert`.
pub fn plan(a: &ConvertArgs) -> Result<(), Failure> {
    let a = &crate::recipe::apply(a)?;
    let job = plan_convert(&options(a)?)?;
    if a.common.report.json {
        let mut value = plan_json(&job.job);
        value["misaligned"] = serde_json::to_value(&job.misaligned).unwrap_or_default();
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print_plan(&job.job);
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
    let job = plan_convert(&opts)?;
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
    print_report(
        &report,
        "converted",
        &opts.run.target,
        a.plan.prepare,
        &a.common,
    );
    Ok(())
}
