//! Prints a file's inventory as JSON, with the number of byte ranges of each variable.
//!
//! ```text
//! cargo run --example inspect -- FILE
//! ```

use chunkmill_hdf5::SourceFile;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: inspect FILE");
        std::process::exit(2);
    };
    let run = || -> Result<(), chunkmill_hdf5::Error> {
        let file = SourceFile::open_path(&path)?;
        let inventory = file.inventory()?;
        let mut json = serde_json::to_value(&inventory).unwrap_or_default();
        for (v, out) in inventory
            .variables
            .iter()
            .zip(json["variables"].as_array_mut().into_iter().flatten())
        {
            out["byte_ranges"] = match file.data_refs(v) {
                Ok(refs) => refs.range_count().into(),
                Err(e) => e.to_string().into(),
            };
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("chunkmill: {e}");
        std::process::exit(1);
    }
}
