//! Parsing what users type: sizes (`512MB`, `2GiB`) and chunk specs (`time=-1,lat=18`).

/// A size in bytes from `512MB`, `2GiB`, `1.5GB`, `1000` (bytes), `64k`.
///
/// # Errors
/// A message echoing the input and the expected form.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!("invalid size '{text}': expected a number with an optional unit, like 512MB, 2GiB or 1.5GB")
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    if !value.is_finite() || value <= 0.0 {
        return Err(bad());
    }
    let bytes = value * factor;
    // A float-to-integer cast saturates: 20EB would silently become 18.4 EB and 0.1 would
    // become 0, so a budget or size the user did not mean would be used.
    if bytes < 1.0 {
        return Err(format!("invalid size '{text}': less than one byte"));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!(
            "invalid size '{text}': larger than the largest size this machine can count ({} bytes)",
            u64::MAX
        ));
    }
    Ok(bytes as u64)
}

/// Chunk sizes by dimension name or by axis; `None` is `-1`, the whole axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkSpec {
    /// `time=8760,lat=18`.
    ByName(Vec<(String, Option<u64>)>),
    /// `8760,18,36`.
    ByAxis(Vec<Option<u64>>),
}

impl std::str::FromStr for ChunkSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid chunk spec '{text}': {why}; expected time=8760,lat=18 or 8760,18,36 (-1 = whole axis)")
        };
        let size = |v: &str| -> Result<Option<u64>, String> {
            match v.trim().parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(n as u64)),
                _ => Err(bad(&format!("'{v}' is not a positive size or -1"))),
            }
        };
        let parts: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(bad("it is empty"));
        }
        if parts.iter().all(|p| p.contains('=')) {
            let mut named = Vec::new();
            for p in parts {
                let (name, value) = p.split_once('=').unwrap_or((p, ""));
                if named.iter().any(|(n, _): &(String, Option<u64>)| n == name) {
                    return Err(bad(&format!("'{name}' appears twice")));
                }
                named.push((name.trim().to_string(), size(value)?));
            }
            Ok(ChunkSpec::ByName(named))
        } else if parts.iter().any(|p| p.contains('=')) {
            Err(bad("mixes names and positions"))
        } else {
            Ok(ChunkSpec::ByAxis(
                parts.into_iter().map(size).collect::<Result<_, _>>()?,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn sizes() -> TestResult {
        assert_eq!(parse_size("512MB")?, 512_000_000);
        assert_eq!(parse_size("2GiB")?, 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("1.5GB")?, 1_500_000_000);
        assert!(parse_size("lots").unwrap_err().contains("'lots'"));
        assert!(parse_size("-5MB").is_err());
        assert!(parse_size("20000000TB")
            .unwrap_err()
            .contains("larger than"));
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("larger than"));
        assert!(parse_size("0.1")
            .unwrap_err()
            .contains("less than one byte"));
        assert_eq!(parse_size("18000000TB")?, 18_000_000_000_000_000_000);
        Ok(())
    }

    #[test]
    fn specs() -> TestResult {
        assert_eq!(
            "time=-1,lat=18".parse::<ChunkSpec>()?,
            ChunkSpec::ByName(vec![("time".into(), None), ("lat".into(), Some(18))])
        );
        assert_eq!(
            "8760,18,36".parse::<ChunkSpec>()?,
            ChunkSpec::ByAxis(vec![Some(8760), Some(18), Some(36)])
        );
        assert!("time=0".parse::<ChunkSpec>().is_err());
        assert!("time=5,7".parse::<ChunkSpec>().is_err());
        Ok(())
    }
}
