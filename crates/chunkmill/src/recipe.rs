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
//!
//! A recipe is turned into command-line words (`--max-mem=1GB`, `--select=lat=60:-60`) placed
//! before the user's, and the whole line is parsed once by clap: the recipe's values go
//! through the same parsers and checks as typed flags. A flag of one value given on the
//! command line replaces the recipe's (the recipe's word is left out); the words of a
//! repeatable flag add to the recipe's, and a name repeated between them is refused as one
//! repeated on the command line is.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::args::Cli;
use crate::Failure;

/// How a recipe key becomes command-line words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The input paths (positional, before the target).
    Inputs,
    /// The target path (positional, last).
    Target,
    /// A flag with one value: `--chunks=…`.
    One,
    /// A flag without a value, given when true: `--decode-cf`.
    Switch,
    /// A repeatable flag: one `--select=…` per item.
    Many,
    /// A flag whose one value is a comma-separated list: `--identical-dims=a,b`.
    Joined,
}

/// Every key a recipe may hold (the documented set: run flags such as `--overwrite` or
/// `--executor` stay on the command line).
const KEYS: [(&str, Shape); 26] = [
    ("inputs", Shape::Inputs),
    ("target", Shape::Target),
    ("chunks", Shape::One),
    ("max_mem", Shape::One),
    ("codec", Shape::One),
    ("shards", Shape::One),
    ("zarr_format", Shape::One),
    ("temp", Shape::One),
    ("variables", Shape::Many),
    ("select", Shape::Many),
    ("isel", Shape::Many),
    ("rename", Shape::Many),
    ("drop", Shape::Many),
    ("decode_cf", Shape::Switch),
    ("cast", Shape::Many),
    ("reverse", Shape::Many),
    ("concat_dim", Shape::One),
    ("stack", Shape::Switch),
    ("identical_dims", Shape::Joined),
    ("compat", Shape::One),
    ("strict_alignment", Shape::Switch),
    ("append", Shape::One),
    ("allow_gap", Shape::Switch),
    ("tile", Shape::One),
    ("allow_refs", Shape::Many),
    ("work_dir", Shape::One),
];

/// One value as a file holds it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(t) => t.clone(),
        }
    }
}

/// A key's value: one, or a list.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
enum Item {
    One(Scalar),
    Many(Vec<Scalar>),
}

impl Item {
    fn items(&self) -> Vec<String> {
        match self {
            Item::One(s) => vec![s.text()],
            Item::Many(list) => list.iter().map(Scalar::text).collect(),
        }
    }
}

type Recipe = BTreeMap<String, Item>;

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

/// The words a recipe adds to a command line: those that go before the user's words (the
/// inputs, then the flags) and those after (the target). `given_paths` is how many paths the
/// command line holds; `given(key)` says whether it gives the flag of `key`.
fn words(
    label: &str,
    recipe: &Recipe,
    given_paths: usize,
    given: &dyn Fn(&str) -> bool,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let bad = |e: String| Failure::usage(format!("{label}: {e}"));
    let (mut before, mut flags, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for (key, item) in recipe {
        let Some(&(_, shape)) = KEYS.iter().find(|(k, _)| k == key) else {
            let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(bad(format!(
                "unknown key `{key}`; a recipe holds {}",
                keys.join(", ")
            )));
        };
        let long = key.replace('_', "-");
        let one = || match item {
            Item::One(s) => Ok(s.text()),
            Item::Many(_) => Err(bad(format!("`{key}` takes one value, not a list"))),
        };
        match shape {
            // The command line's paths win: two or more are inputs and target, one is the target.
            Shape::Inputs if given_paths < 2 => before.extend(item.items()),
            Shape::Target if given_paths == 0 => after.push(one()?),
            Shape::Inputs | Shape::Target => {}
            _ if shape != Shape::Many && given(key) => {}
            Shape::One => flags.push(format!("--{long}={}", one()?)),
            Shape::Joined => flags.push(format!("--{long}={}", item.items().join(","))),
            Shape::Many => flags.extend(item.items().iter().map(|v| format!("--{long}={v}"))),
            Shape::Switch => match item {
                Item::One(Scalar::Bool(true)) => flags.push(format!("--{long}")),
                Item::One(Scalar::Bool(false)) => {}
                _ => return Err(bad(format!("`{key}` takes true or false"))),
            },
        }
    }
    if let Some(p) = before.iter().chain(&after).find(|p| p.starts_with('-')) {
        return Err(bad(format!(
            "path '{p}' starts with '-'; write it as ./{p}"
        )));
    }
    let has_inputs = given_paths >= 2 || !before.is_empty();
    let has_target = given_paths >= 1 || !after.is_empty();
    if !(has_inputs && has_target) {
        return Err(bad(
            "give `inputs` and `target` in the recipe, or the paths on the command line"
                .to_string(),
        ));
    }
    before.extend(flags);
    Ok((before, after))
}

/// The command line as the user typed it, with the settings of a `convert --recipe` (or
/// `plan convert --recipe`) read in as flags; clap's own errors end the process as clap does
/// (exit 2, or 0 for `--help`).
///
/// # Errors
/// A usage failure naming the recipe when it cannot be read, holds an unknown key or a value
/// its flag refuses.
pub fn parse(argv: Vec<OsString>) -> Result<Cli, Failure> {
    let matches = Cli::command().get_matches_from(argv.clone());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    merge(argv, &matches, cli, None)
}

/// [`parse`] for a caller that must not end the process (the Python package): clap's errors
/// are usage failures with clap's first line; `inline` is a recipe given as a JSON object
/// (`chunkmill.convert(..., recipe={...})`), read as a recipe file's keys are.
///
/// # Errors
/// As [`parse`], and a usage failure for a malformed command line.
pub fn try_parse(argv: Vec<OsString>, inline: Option<&serde_json::Value>) -> Result<Cli, Failure> {
    let clap_error = |e: clap::Error| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        Failure::usage(first.strip_prefix("error: ").unwrap_or(first).to_string())
    };
    let matches = Cli::command()
        .try_get_matches_from(argv.clone())
        .map_err(clap_error)?;
    let cli = Cli::from_arg_matches(&matches).map_err(clap_error)?;
    merge(argv, &matches, cli, inline)
}

/// The command line with the recipe's words read in (the recipe file of `--recipe`, or one
/// given inline).
fn merge(
    argv: Vec<OsString>,
    matches: &ArgMatches,
    cli: Cli,
    inline: Option<&serde_json::Value>,
) -> Result<Cli, Failure> {
    let (convert, depth) = match matches.subcommand() {
        Some(("convert", m)) => (m, 2),
        Some(("plan", plan)) => match plan.subcommand() {
            Some(("convert", m)) => (m, 3),
            _ => return Ok(cli),
        },
        _ if inline.is_some() => {
            return Err(Failure::usage("a recipe is for convert only"));
        }
        _ => return Ok(cli),
    };
    let (label, recipe) = match (convert.get_one::<String>("recipe"), inline) {
        (None, None) => return Ok(cli),
        (Some(path), None) => (format!("--recipe {path}"), read(path)?),
        (None, Some(value)) => (
            "recipe".to_string(),
            serde_json::from_value::<Recipe>(value.clone()).map_err(|e| {
                Failure::usage(format!(
                    "recipe: {e}; a recipe maps keys to a value or a list of values"
                ))
            })?,
        ),
        (Some(path), Some(_)) => {
            return Err(Failure::usage(format!(
                "--recipe {path}: give one recipe, not a file and an inline one"
            )))
        }
    };
    let given_paths = convert
        .get_many::<String>("paths")
        .map_or(0, Iterator::count);
    let given = |key: &str| given(convert, key);
    let (before, after) = words(&label, &recipe, given_paths, &given)?;
    if argv.len() < depth || argv[depth - 1] != "convert" {
        return Err(Failure::usage(format!("{label}: give it after `convert`")));
    }
    let merged: Vec<OsString> = argv[..depth]
        .iter()
        .cloned()
        .chain(before.into_iter().map(OsString::from))
        .chain(argv[depth..].iter().cloned())
        .chain(after.into_iter().map(OsString::from))
        .collect();
    Cli::try_parse_from(merged).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        Failure::usage(format!(
            "{label}: {}",
            first.strip_prefix("error: ").unwrap_or(first)
        ))
    })
}

/// Whether the command line gives the flag of a recipe key.
fn given(matches: &ArgMatches, key: &str) -> bool {
    matches.value_source(key) == Some(ValueSource::CommandLine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(toml_text: &str) -> Recipe {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_key_is_a_flag_of_convert() {
        let command = Cli::command();
        let convert = command
            .find_subcommand("convert")
            .unwrap_or_else(|| panic!("no convert"));
        // The paths are the positional `paths`; every other key is a flag whose id is the key
        // (what `given` asks clap about) and whose long name is the key with `-`.
        for (key, _) in KEYS
            .iter()
            .filter(|(_, s)| !matches!(s, Shape::Inputs | Shape::Target))
        {
            let arg = convert
                .get_arguments()
                .find(|a| a.get_id() == *key)
                .unwrap_or_else(|| panic!("{key} is no argument of convert"));
            assert_eq!(arg.get_long(), Some(key.replace('_', "-").as_str()));
        }
        assert!(convert.get_arguments().any(|a| a.get_id() == "paths"));
    }

    #[test]
    fn keys_become_words() -> Result<(), Failure> {
        let r = recipe(
            r#"
inputs = ["a.nc", "b.nc"]
target = "t.zarr"
chunks = "time=-1"
zarr_format = 2
select = ["lat=60:-60", "time=2020-01-01:2020-06-30"]
identical_dims = ["lat", "lon"]
decode_cf = true
stack = false
"#,
        );
        let (before, after) = words("r.toml", &r, 0, &|_| false)?;
        assert_eq!(
            before,
            [
                "a.nc",
                "b.nc",
                "--chunks=time=-1",
                "--decode-cf",
                "--identical-dims=lat,lon",
                "--select=lat=60:-60",
                "--select=time=2020-01-01:2020-06-30",
                "--zarr-format=2",
            ]
        );
        assert_eq!(after, ["t.zarr"]);
        Ok(())
    }

    #[test]
    fn the_command_line_wins_over_single_values_and_adds_to_lists() -> Result<(), Failure> {
        let r = recipe("inputs = [\"a.nc\"]\ntarget = \"t.zarr\"\nchunks = \"x=1\"\ndrop = [\"u\"]\ndecode_cf = true\n");
        let given = |k: &str| k == "chunks" || k == "drop" || k == "decode_cf";
        let (before, after) = words("r.toml", &r, 1, &given)?;
        assert_eq!(before, ["a.nc", "--drop=u"]);
        assert!(after.is_empty(), "the command line's target wins");
        let (before, after) = words("r.toml", &r, 2, &given)?;
        assert_eq!((before, after), (vec!["--drop=u".to_string()], vec![]));
        Ok(())
    }

    #[test]
    fn refusals_name_the_recipe() {
        for (text, paths, words_said) in [
            ("max_memory = \"1GB\"", 2, vec!["r.toml", "max_memory"]),
            (
                "chunks = [\"x=1\"]",
                2,
                vec!["r.toml", "chunks", "one value"],
            ),
            (
                "decode_cf = \"yes\"",
                2,
                vec!["r.toml", "decode_cf", "true or false"],
            ),
            ("target = \"t.zarr\"", 0, vec!["r.toml", "inputs"]),
            (
                "inputs = [\"-x.nc\"]\ntarget = \"t\"",
                0,
                vec!["r.toml", "./-x.nc"],
            ),
        ] {
            let err = words("r.toml", &recipe(text), paths, &|_| false)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            for w in words_said {
                assert!(err.contains(w), "{text}: {err}");
            }
        }
    }

    #[test]
    fn a_recipe_is_parsed_by_clap_with_the_command_line() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = std::env::temp_dir().join(format!("chunkmill-recipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("r.yaml");
        std::fs::write(
            &file,
            "inputs: [a.nc, b.nc]\ntarget: t.zarr\nchunks: time=-1\nmax_mem: 64MB\nzarr_format: 2\nreverse: [lat]\n",
        )?;
        let file = file.to_string_lossy().to_string();
        let argv = |extra: &[&str]| -> Vec<OsString> {
            ["chunkmill", "plan", "convert", "--recipe", &file]
                .iter()
                .chain(extra)
                .map(OsString::from)
                .collect()
        };
        let crate::args::Command::Plan {
            job: crate::args::PlanJob::Convert(a),
        } = parse(argv(&["--max-mem", "1GB", "--reverse", "lon", "u.zarr"]))?.command
        else {
            return Err("not plan convert".into());
        };
        assert_eq!(a.paths, ["a.nc", "b.nc", "u.zarr"]);
        assert_eq!(a.plan.max_mem.as_deref(), Some("1GB"));
        assert_eq!(a.plan.chunks.as_deref(), Some("time=-1"));
        assert_eq!(a.plan.zarr_format, Some(2));
        assert_eq!(a.reverse, ["lat", "lon"]);
        // A value clap refuses is a usage error naming the recipe.
        std::fs::write(
            dir.join("z.toml"),
            "zarr_format = 5\ninputs=[\"a\"]\ntarget=\"t\"\n",
        )?;
        let z = dir.join("z.toml").to_string_lossy().to_string();
        let err = parse(
            ["chunkmill", "convert", "--recipe", &z]
                .map(OsString::from)
                .to_vec(),
        )
        .err()
        .ok_or("accepted")?;
        assert_eq!(crate::failure::exit_code(&err), 2);
        assert!(err.to_string().contains("z.toml"), "{err}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
