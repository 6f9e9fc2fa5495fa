//! `chunkmill convert` (and `plan convert`) resolved: selections, renames, casts, tiles and
//! the run options of its target.

use chunkmill_ops::convert::{default_codec, ConvertOptions, IndexSelection, ValueSelection};

use super::{list, refuse_duplicates, run_options, BudgetOrigin};
use crate::args::ConvertArgs;
use crate::Failure;

/// `NAME=VALUE`, both sides non-empty.
pub(super) fn split_pair<'a>(
    flag: &str,
    text: &'a str,
    form: &str,
) -> Result<(&'a str, &'a str), Failure> {
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

/// `--select DIM=START:STOP` (either end may be empty).
pub fn value_selection(text: &str) -> Result<ValueSelection, Failure> {
    let (dim, start, stop) = split_range("--select", text, "DIM=START:STOP, like lat=-30:30")?;
    Ok(ValueSelection {
        dim: dim.to_string(),
        start: start.map(str::to_string),
        stop: stop.map(str::to_string),
    })
}

/// `--isel DIM=I:J` (Python style: stop excluded, negative from the end).
pub fn index_selection(text: &str) -> Result<IndexSelection, Failure> {
    let form = "DIM=I:J, like time=0:24";
    let (dim, start, stop) = split_range("--isel", text, form)?;
    let index = |v: Option<&str>| {
        v.map(str::parse::<i64>)
            .transpose()
            .map_err(|_| Failure::usage(format!("--isel '{text}': expected {form}")))
    };
    Ok(IndexSelection {
        dim: dim.to_string(),
        start: index(start)?,
        stop: index(stop)?,
    })
}

/// `--rename OLD=NEW` or `--cast VAR=DTYPE`, each given as a list of `NAME=VALUE`.
fn pairs(flag: &str, items: &[String], form: &str) -> Result<Vec<(String, String)>, Failure> {
    items
        .iter()
        .map(|t| split_pair(flag, t, form).map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// `--tile DIM=SIZE,...`: whole sizes, each dimension once (a size that does not fit its
/// dimension is refused by the job, which knows the dimension).
pub fn tiles(spec: &str) -> Result<Vec<(String, u64)>, Failure> {
    let mut tiles: Vec<(String, u64)> = Vec::new();
    for part in spec.split(',') {
        let (dim, size) = split_pair("--tile", part, "DIM=SIZE,…, like lat=32,lon=32")?;
        let size = size
            .parse::<u64>()
            .map_err(|_| Failure::usage(format!("--tile '{spec}': {size} is not a tile size")))?;
        if tiles.iter().any(|(d, _)| d == dim) {
            return Err(Failure::usage(format!(
                "--tile '{spec}': {dim} is given twice"
            )));
        }
        tiles.push((dim.to_string(), size));
    }
    Ok(tiles)
}

/// `--compat equals|override` (clap checks the word; this gives the typed value).
pub fn compat(mode: Option<&str>) -> Result<chunkmill_manifest::Compat, Failure> {
    mode.map_or(Ok(chunkmill_manifest::Compat::Equals), |m| {
        m.parse()
            .map_err(|e| Failure::usage(format!("--compat {e}")))
    })
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

/// Flags that only mean something with another one.
fn refuse_orphans(a: &ConvertArgs) -> Result<(), Failure> {
    if a.stack && a.concat_dim.is_none() {
        return Err(Failure::usage(
            "--stack needs --concat-dim NAME: the new dimension to stack the files along",
        ));
    }
    if a.allow_gap && a.append.is_none() {
        return Err(Failure::usage("--allow-gap is for --append DIM"));
    }
    if a.plan.chunks.is_none() {
        return Err(Failure::usage(
            "--chunks is required (here or in the recipe): the target's chunks, like time=-1,lat=10,lon=10",
        ));
    }
    Ok(())
}

/// `chunkmill convert` resolved (the recipe, if any, is already in `a`: see
/// [`crate::recipe`]): its options and where the budget came from.
pub fn convert(a: &ConvertArgs) -> Result<(ConvertOptions, BudgetOrigin), Failure> {
    refuse_repeated(a)?;
    let (target, inputs) = a
        .paths
        .split_last()
        .filter(|(_, inputs)| !inputs.is_empty())
        .ok_or_else(|| Failure::usage("give the inputs, then the target (or a --recipe)"))?;
    refuse_orphans(a)?;
    let (mut layout, job, origin) = run_options(target, &a.plan, &a.common)?;
    if layout.codec.is_none() {
        layout.codec = Some(default_codec());
    }
    let options = ConvertOptions {
        inputs: inputs.to_vec(),
        layout,
        job,
        group: a.group.clone(),
        variables: a
            .variables
            .iter()
            .filter(|v| !v.is_empty())
            .cloned()
            .collect(),
        drop: a.drop.clone(),
        select: a
            .select
            .iter()
            .map(|s| value_selection(s))
            .collect::<Result<_, _>>()?,
        isel: a
            .isel
            .iter()
            .map(|s| index_selection(s))
            .collect::<Result<_, _>>()?,
        reverse: a.reverse.clone(),
        rename: pairs("--rename", &a.rename, "OLD=NEW")?,
        decode_cf: a.decode_cf,
        cast: pairs("--cast", &a.cast, "VAR=DTYPE, like air=float32")?,
        concat_dim: a.concat_dim.clone(),
        identical_dims: list(a.identical_dims.as_deref()),
        stack: a.stack,
        compat: compat(a.compat.as_deref())?,
        strict_alignment: a.strict_alignment,
        append: a.append.clone(),
        allow_gap: a.allow_gap,
        allow_refs: a.allow_refs.clone(),
        tile: a
            .tile
            .as_deref()
            .map(tiles)
            .transpose()?
            .unwrap_or_default(),
    };
    Ok((options, origin))
}
