//! `chunkmill convert --recipe FILE`: a whole conversion in one TOML or YAML file, so a cache
//! can be rebuilt (or appended to) from it. The only module that reads TOML (`toml`) or YAML
//! (`serde_yaml_ng`, pinned).
//!
//! Keys are the long flag names with `_` for `-`; lists take several values:
//!
//! ```toml
//! inputs = ["data/day_*.nc"]
//! target = "cache.zarr"
//! chunks = "time=-1,lat=18,lon=36"
//! max_mem = "1GB"
//! concat_dim = "time"
//! select = ["lat=60:-60", "time=2020-01-01:2020-06-30"]
//! rename = ["air=temperature"]
//! decode_cf = true
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::args::ConvertArgs;
use crate::Failure;

/// What a recipe may say; everything is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    inputs: Option<Vec<String>>,
    target: Option<String>,
    chunks: Option<String>,
    max_mem: Option<String>,
    codec: Option<String>,
    shards: Option<String>,
    zarr_format: Option<u8>,
    temp: Option<String>,
    variables: Option<Vec<String>>,
    select: Option<Vec<String>>,
    isel: Option<Vec<String>>,
    rename: Option<Vec<String>>,
    drop: Option<Vec<String>>,
    decode_cf: Option<bool>,
    cast: Option<Vec<String>>,
    reverse: Option<Vec<String>>,
    concat_dim: Option<String>,
    stack: Option<bool>,
    identical_dims: Option<Vec<String>>,
    compat: Option<String>,
    strict_alignment: Option<bool>,
    append: Option<String>,
    allow_gap: Option<bool>,
    tile: Option<String>,
    allow_refs: Option<Vec<String>>,
    work_dir: Option<String>,
}

fn read(path: &str) -> Result<Recipe, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("--recipe {path}: cannot read: {e}")))?;
    let bad = |e: String| Failure::usage(format!("--recipe {path}: {e}"));
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).map_err(|e| bad(e.to_string().replace('\n', " "))),
        Some("yaml" | "yml") => serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string())),
        _ => Err(bad("a recipe is a .toml, .yaml or .yml file".to_string())),
    }
}

/// `args` with the recipe's values filled in where the command line gave none, and its lists
/// before the command line's.
///
/// # Errors
/// A usage failure naming the file when it cannot be read or has an unknown key.
pub fn apply(args: &ConvertArgs) -> Result<ConvertArgs, Failure> {
    let Some(path) = &args.recipe else {
        return Ok(args.clone());
    };
    let recipe = read(path)?;
    let mut merged = args.clone();
    let list = |from: Option<Vec<String>>, given: &[String]| -> Vec<String> {
        from.unwrap_or_default()
            .into_iter()
            .chain(given.iter().cloned())
            .collect()
    };
    merged.paths = match (recipe.inputs, recipe.target, args.paths.as_slice()) {
        (_, _, [_, _, ..]) => args.paths.clone(),
        (Some(inputs), _, [target]) => list(Some(inputs), std::slice::from_ref(target)),
        (Some(inputs), Some(target), []) => list(Some(inputs), &[target]),
        _ => {
            return Err(Failure::usage(format!(
                "--recipe {path}: give `inputs` and `target` in the recipe, or the paths on the command line"
            )))
        }
    };
    let plan = &mut merged.plan;
    plan.chunks = plan.chunks.take().or(recipe.chunks);
    plan.max_mem = plan.max_mem.take().or(recipe.max_mem);
    plan.codec = plan.codec.take().or(recipe.codec);
    plan.shards = plan.shards.take().or(recipe.shards);
    plan.temp = plan.temp.take().or(recipe.temp);
    plan.zarr_format = plan.zarr_format.or(recipe.zarr_format);
    merged.variables = list(recipe.variables, &args.variables);
    merged.select = list(recipe.select, &args.select);
    merged.isel = list(recipe.isel, &args.isel);
    merged.rename = list(recipe.rename, &args.rename);
    merged.drop = list(recipe.drop, &args.drop);
    merged.cast = list(recipe.cast, &args.cast);
    merged.reverse = list(recipe.reverse, &args.reverse);
    merged.allow_refs = list(recipe.allow_refs, &args.allow_refs);
    merged.decode_cf |= recipe.decode_cf.unwrap_or(false);
    merged.strict_alignment |= recipe.strict_alignment.unwrap_or(false);
    merged.concat_dim = args.concat_dim.clone().or(recipe.concat_dim);
    merged.identical_dims = args
        .identical_dims
        .clone()
        .or(recipe.identical_dims.map(|d| d.join(",")));
    merged.append = args.append.clone().or(recipe.append);
    merged.stack |= recipe.stack.unwrap_or(false);
    merged.allow_gap |= recipe.allow_gap.unwrap_or(false);
    merged.compat = args.compat.clone().or(recipe.compat);
    merged.tile = args.tile.clone().or(recipe.tile);
    merged.common.work_dir = args.common.work_dir.clone().or(recipe.work_dir);
    Ok(merged)
}
