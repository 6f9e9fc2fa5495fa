//! What `convert` selects: coordinate values (CF times included) and index ranges resolved to
//! one window per axis, and the window's chunks cut at the source's chunk boundaries.

use chunkmill_grid::AxisChunks;
use chunkmill_plan::{AxisWindow, ValueMap};

/// A selection of one dimension by coordinate value, both ends included (as xarray's
/// `.sel(dim=slice(start, stop))`); an end left empty is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueSelection {
    /// Dimension name (as in the source).
    pub dim: String,
    /// First value, as typed: a number, or a date for a CF time coordinate.
    pub start: Option<String>,
    /// Last value.
    pub stop: Option<String>,
}

/// A selection of one dimension by index, Python's `start:stop` (stop excluded, negative
/// counts from the end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSelection {
    /// Dimension name (as in the source).
    pub dim: String,
    /// First index.
    pub start: Option<i64>,
    /// One past the last index.
    pub stop: Option<i64>,
}

pub(crate) fn parse_date(text: &str) -> Option<(i64, u32, u32, f64)> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: u32 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut seconds = 0.0;
    if let Some(time) = time {
        let time = time.trim_end_matches('Z');
        for (i, part) in time.split(':').enumerate() {
            let value: f64 = part.parse().ok()?;
            seconds += value * [3600.0, 60.0, 1.0].get(i)?;
        }
    }
    Some((year, month, day, seconds))
}

/// Days from 1970-01-01 in the proleptic Gregorian calendar (the civil-from-days algorithm
/// run backwards).
pub(crate) fn days_gregorian(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days from year 0 in a calendar xarray/cftime knows.
pub(crate) fn days_in_calendar(calendar: &str, (y, m, d): (i64, u32, u32)) -> Option<i64> {
    const CUMULATIVE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    match calendar {
        "standard" | "gregorian" | "proleptic_gregorian" | "" => Some(days_gregorian(y, m, d)),
        "noleap" | "365_day" => Some(y * 365 + CUMULATIVE[m as usize - 1] + i64::from(d) - 1),
        "all_leap" | "366_day" => {
            let leap_shift = i64::from(m > 2);
            Some(y * 366 + CUMULATIVE[m as usize - 1] + leap_shift + i64::from(d) - 1)
        }
        "360_day" => Some(y * 360 + i64::from(m - 1) * 30 + i64::from(d) - 1),
        _ => None,
    }
}

/// A CF time (`2020-01-31`, `2020-01-31T12:00`) in the coordinate's units
/// (`days since 1990-01-01`) and calendar.
pub(crate) fn cf_time_value(text: &str, units: &str, calendar: &str) -> Result<f64, String> {
    let (unit, reference) = units
        .split_once(" since ")
        .ok_or_else(|| format!("units '{units}' are not '<unit> since <date>'"))?;
    let seconds_per_unit = match unit.trim() {
        "days" | "day" | "d" => 86_400.0,
        "hours" | "hour" | "h" | "hr" => 3_600.0,
        "minutes" | "minute" | "min" => 60.0,
        "seconds" | "second" | "s" | "sec" => 1.0,
        "milliseconds" | "ms" => 1e-3,
        other => return Err(format!("time unit '{other}' is not supported")),
    };
    let parse = |t: &str| {
        parse_date(t.trim())
            .ok_or_else(|| format!("'{t}' is not a date like 2020-01-31 or 2020-01-31T12:00"))
    };
    let reference = reference
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("T");
    let (ry, rm, rd, rs) = parse(&reference)?;
    let (y, m, d, s) = parse(text)?;
    let calendar = calendar.to_ascii_lowercase();
    let days = |ymd| {
        days_in_calendar(&calendar, ymd)
            .ok_or_else(|| format!("calendar '{calendar}' is not supported"))
    };
    let delta = (days((y, m, d))? - days((ry, rm, rd))?) as f64 * 86_400.0 + s - rs;
    Ok(delta / seconds_per_unit)
}

pub(crate) fn element_values(bytes: &[u8], dtype: &str) -> Result<Vec<f64>, String> {
    let map = ValueMap {
        from: dtype.to_string(),
        to: "float64".into(),
        missing: Vec::new(),
        scale: None,
        offset: None,
    };
    let wide = crate::values::convert(&map, bytes)?;
    Ok(wide
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// The index range `xarray.sel(dim=slice(start, stop))` picks on a monotonic coordinate.
pub(crate) fn value_range(
    values: &[f64],
    start: Option<f64>,
    stop: Option<f64>,
) -> Result<std::ops::Range<u64>, String> {
    let ascending = values.windows(2).all(|w| w[0] < w[1]);
    let descending = values.windows(2).all(|w| w[0] > w[1]);
    if !ascending && !descending {
        return Err("the coordinate is not monotonic, so it cannot be selected by value".into());
    }
    let n = values.len();
    // A descending coordinate is an ascending one read with the opposite sign.
    let sign = if ascending { 1.0 } else { -1.0 };
    let first = start.map_or(0, |s| {
        values
            .iter()
            .position(|&v| sign * v >= sign * s)
            .unwrap_or(n)
    });
    let last = stop.map_or(n, |s| {
        values
            .iter()
            .rposition(|&v| sign * v <= sign * s)
            .map_or(0, |i| i + 1)
    });
    if first >= last {
        return Err(format!(
            "selects nothing: the coordinate runs from {} to {} ({})",
            values.first().copied().unwrap_or(f64::NAN),
            values.last().copied().unwrap_or(f64::NAN),
            if ascending {
                "ascending"
            } else {
                "descending: give the larger value first"
            }
        ));
    }
    Ok(first as u64..last as u64)
}

pub(crate) fn index_range(len: u64, start: Option<i64>, stop: Option<i64>) -> std::ops::Range<u64> {
    let resolve = |i: i64| -> u64 {
        if i < 0 {
            (len as i64 + i).max(0) as u64
        } else {
            (i as u64).min(len)
        }
    };
    let first = start.map_or(0, resolve);
    let last = stop.map_or(len, resolve);
    first..last.max(first)
}

/// The window's chunks, cut at the source chunk boundaries (`size` apart) inside
/// `start..start + len`, in output coordinates.
pub(crate) fn window_axis(size: u64, window: &AxisWindow) -> Result<AxisChunks, String> {
    let end = window.start + window.len;
    let aligned_start = if window.reverse { end } else { window.start };
    if aligned_start % size == 0 {
        return AxisChunks::regular(size, window.len).map_err(|e| e.to_string());
    }
    let mut bounds: Vec<u64> = vec![window.start];
    let mut b = (window.start / size + 1) * size;
    while b < end {
        bounds.push(b);
        b += size;
    }
    bounds.push(end);
    let mut out: Vec<u64> = if window.reverse {
        bounds.iter().rev().map(|&b| end - b).collect()
    } else {
        bounds.iter().map(|&b| b - window.start).collect()
    };
    out.dedup();
    AxisChunks::rectilinear(out).map_err(|e| e.to_string())
}

/// The whole source chunks (of `size`, on an axis of length `len`) that `window` meets: what
/// reading it decodes, and the nearest selection on chunk boundaries.
pub(crate) fn aligned_range(size: u64, len: u64, window: &AxisWindow) -> std::ops::Range<u64> {
    let first = window.start / size * size;
    let last = ((window.start + window.len).div_ceil(size) * size).min(len);
    first..last
}

/// Elements decoded along one axis of chunk `size` and length `len` to read `window`.
pub(crate) fn axis_read(size: u64, len: u64, window: &AxisWindow) -> u64 {
    let range = aligned_range(size, len, window);
    range.end - range.start
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn cf_time_in_days_hours_and_calendars() -> TestResult {
        assert_eq!(
            cf_time_value("2020-01-01", "days since 2020-01-01", "standard")?,
            0.0
        );
        assert_eq!(
            cf_time_value("2020-03-01", "days since 2020-01-01", "standard")?,
            60.0
        );
        assert_eq!(
            cf_time_value("2020-03-01", "days since 2020-01-01", "noleap")?,
            59.0
        );
        assert_eq!(
            cf_time_value("2020-03-01", "days since 2020-01-01", "360_day")?,
            60.0
        );
        assert_eq!(
            cf_time_value(
                "1970-01-02T06:00",
                "hours since 1970-01-01 00:00:00",
                "gregorian"
            )?,
            30.0
        );
        assert_eq!(days_gregorian(1970, 1, 1), 0);
        assert_eq!(days_gregorian(2000, 3, 1), 11_017);
        assert!(cf_time_value("2020-01-01", "days since 2020-01-01", "julian").is_err());
        Ok(())
    }

    #[test]
    fn value_ranges_follow_xarray_label_slicing() -> TestResult {
        let up = [0.5, 1.5, 2.5, 3.5];
        assert_eq!(value_range(&up, Some(1.0), Some(2.5))?, 1..3);
        assert_eq!(value_range(&up, None, Some(0.5))?, 0..1);
        let down = [3.5, 2.5, 1.5, 0.5];
        assert_eq!(value_range(&down, Some(3.0), Some(1.5))?, 1..3);
        assert!(value_range(&down, Some(1.5), Some(3.0)).is_err());
        assert!(value_range(&up, Some(10.0), Some(20.0)).is_err());
        assert!(value_range(&[1.0, 0.0, 2.0], Some(0.0), None).is_err());
        Ok(())
    }

    #[test]
    fn windows_cut_at_source_chunk_boundaries() -> TestResult {
        let w = AxisWindow {
            start: 3,
            len: 10,
            reverse: false,
        };
        assert_eq!(window_axis(4, &w)?.bounds(), vec![0, 1, 5, 9, 10]);
        let r = AxisWindow {
            start: 3,
            len: 10,
            reverse: true,
        };
        assert_eq!(window_axis(4, &r)?.bounds(), vec![0, 1, 5, 9, 10]);
        let aligned = AxisWindow {
            start: 4,
            len: 10,
            reverse: false,
        };
        assert_eq!(window_axis(4, &aligned)?, AxisChunks::regular(4, 10)?);
        assert_eq!(axis_read(4, 20, &w), 16);
        assert_eq!(index_range(10, Some(-3), None), 7..10);
        assert_eq!(index_range(10, Some(2), Some(5)), 2..5);
        Ok(())
    }
}
