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

/// Seconds per unit of a CF time coordinate's units (`days since …` → 86400) and its
/// reference date.
fn cf_units(units: &str) -> Result<(f64, &str), String> {
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
    Ok((seconds_per_unit, reference))
}

fn parsed(text: &str) -> Result<(i64, u32, u32, f64), String> {
    parse_date(text.trim())
        .ok_or_else(|| format!("'{text}' is not a date like 2020-01-31 or 2020-01-31T12:00"))
}

/// Seconds from the reference date of `units` to a date, in `calendar`.
fn seconds_since(
    (y, m, d, s): (i64, u32, u32, f64),
    units: &str,
    calendar: &str,
) -> Result<f64, String> {
    let (_, reference) = cf_units(units)?;
    let reference = reference
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("T");
    let (ry, rm, rd, rs) = parsed(&reference)?;
    let calendar = calendar.to_ascii_lowercase();
    let days = |ymd| {
        days_in_calendar(&calendar, ymd)
            .ok_or_else(|| format!("calendar '{calendar}' is not supported"))
    };
    Ok((days((y, m, d))? - days((ry, rm, rd))?) as f64 * 86_400.0 + s - rs)
}

/// The instants a date string names, as pandas' and xarray's partial string indexing reads
/// it: `2020` is the whole year, `2020-01` the month, `2020-01-10` the day, `2020-01-10T06`
/// the hour, `…T06:30` the minute, `…T06:30:15` the second; a fractional second names one
/// instant. Returns `start..end` in the coordinate's units, `end` excluded (equal to `start`
/// for one instant).
pub(crate) fn cf_time_period(
    text: &str,
    units: &str,
    calendar: &str,
) -> Result<(f64, f64), String> {
    let (per_unit, _) = cf_units(units)?;
    let date = parsed(text)?;
    let trimmed = text.trim().trim_end_matches('Z');
    let (day_part, time_part) = match trimmed.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (trimmed, None),
    };
    let (y, m, _, _) = date;
    let start = seconds_since(date, units, calendar)?;
    let end = match (day_part.split('-').count(), time_part) {
        (1, None) => seconds_since((y + 1, 1, 1, 0.0), units, calendar)?,
        (2, None) => {
            let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            seconds_since((next.0, next.1, 1, 0.0), units, calendar)?
        }
        (_, None) => start + 86_400.0,
        (_, Some(time)) => {
            let parts: Vec<&str> = time.split(':').collect();
            match parts.as_slice() {
                [_] => start + 3_600.0,
                [_, _] => start + 60.0,
                [.., sec] if !sec.contains('.') => start + 1.0,
                _ => start,
            }
        }
    };
    Ok((start / per_unit, end / per_unit))
}

pub(crate) fn element_values(bytes: &[u8], dtype: &str) -> Result<Vec<f64>, String> {
    let map = ValueMap {
        from: dtype.to_string(),
        to: "float64".into(),
        missing: Vec::new(),
        scale: None,
        offset: None,
        compute: None,
    };
    let wide = crate::values::convert(&map, bytes)?;
    Ok(wide
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// One end of a selection by value: the values from (or up to) `value`, and whether
/// `value` itself is in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bound {
    pub value: f64,
    pub inclusive: bool,
}

impl Bound {
    pub(crate) fn at(value: f64) -> Self {
        Self {
            value,
            inclusive: true,
        }
    }

    /// The ends of a selection whose start and stop name periods (`start_period`,
    /// `stop_period`: `start..end` in the coordinate's units, `end` excluded, or equal to
    /// `start` for one instant): both whole periods are in, on an ascending coordinate and
    /// on a descending one, whose selection runs from the later period down to the earlier
    /// (the instants pandas selects on the coordinate sorted ascending; pandas refuses date
    /// strings on a descending index).
    pub(crate) fn periods(
        start_period: Option<(f64, f64)>,
        stop_period: Option<(f64, f64)>,
        descending: bool,
    ) -> (Option<Bound>, Option<Bound>) {
        let low = |(a, _): (f64, f64)| Bound::at(a);
        let high = |(a, b): (f64, f64)| {
            if b > a {
                Bound {
                    value: b,
                    inclusive: false,
                }
            } else {
                Bound::at(a)
            }
        };
        if descending {
            (start_period.map(high), stop_period.map(low))
        } else {
            (start_period.map(low), stop_period.map(high))
        }
    }
}

/// Whether the coordinate decreases (strictly) along its axis.
pub(crate) fn is_descending(values: &[f64]) -> bool {
    values.len() > 1 && values.windows(2).all(|w| w[0] > w[1])
}

/// The index range `xarray.sel(dim=slice(start, stop))` picks on a monotonic coordinate.
pub(crate) fn value_range(
    values: &[f64],
    start: Option<Bound>,
    stop: Option<Bound>,
) -> Result<std::ops::Range<u64>, String> {
    let ascending = values.windows(2).all(|w| w[0] < w[1]);
    let descending = values.windows(2).all(|w| w[0] > w[1]);
    if !ascending && !descending {
        return Err("the coordinate is not monotonic, so it cannot be selected by value".into());
    }
    let n = values.len();
    // A descending coordinate is an ascending one read with the opposite sign.
    let sign = if ascending { 1.0 } else { -1.0 };
    let after = |v: f64, b: Bound| {
        if b.inclusive {
            sign * v >= sign * b.value
        } else {
            sign * v > sign * b.value
        }
    };
    let before = |v: f64, b: Bound| {
        if b.inclusive {
            sign * v <= sign * b.value
        } else {
            sign * v < sign * b.value
        }
    };
    let first = start.map_or(0, |s| values.iter().position(|&v| after(v, s)).unwrap_or(n));
    let last = stop.map_or(n, |s| {
        values
            .iter()
            .rposition(|&v| before(v, s))
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

    fn start_of(text: &str, units: &str, calendar: &str) -> Result<f64, String> {
        cf_time_period(text, units, calendar).map(|p| p.0)
    }

    #[test]
    fn cf_time_in_days_hours_and_calendars() -> TestResult {
        assert_eq!(
            start_of("2020-01-01", "days since 2020-01-01", "standard")?,
            0.0
        );
        assert_eq!(
            start_of("2020-03-01", "days since 2020-01-01", "standard")?,
            60.0
        );
        assert_eq!(
            start_of("2020-03-01", "days since 2020-01-01", "noleap")?,
            59.0
        );
        assert_eq!(
            start_of("2020-03-01", "days since 2020-01-01", "360_day")?,
            60.0
        );
        assert_eq!(
            start_of(
                "1970-01-02T06:00",
                "hours since 1970-01-01 00:00:00",
                "gregorian"
            )?,
            30.0
        );
        assert_eq!(days_gregorian(1970, 1, 1), 0);
        assert_eq!(days_gregorian(2000, 3, 1), 11_017);
        assert!(start_of("2020-01-01", "days since 2020-01-01", "julian").is_err());
        Ok(())
    }

    #[test]
    fn value_ranges_follow_xarray_label_slicing() -> TestResult {
        let at = |v| Some(Bound::at(v));
        let up = [0.5, 1.5, 2.5, 3.5];
        assert_eq!(value_range(&up, at(1.0), at(2.5))?, 1..3);
        assert_eq!(value_range(&up, None, at(0.5))?, 0..1);
        let down = [3.5, 2.5, 1.5, 0.5];
        assert_eq!(value_range(&down, at(3.0), at(1.5))?, 1..3);
        assert!(value_range(&down, at(1.5), at(3.0)).is_err());
        assert!(value_range(&up, at(10.0), at(20.0)).is_err());
        assert!(value_range(&[1.0, 0.0, 2.0], at(0.0), None).is_err());
        Ok(())
    }

    #[test]
    fn select_time_partial_date_stop_keeps_the_whole_day() -> TestResult {
        // Hourly from 2020-01-01T00: `2020-01-03:2020-01-10` keeps Jan 10 up to 23:00.
        let hours: Vec<f64> = (0..24 * 12).map(f64::from).collect();
        let units = "hours since 2020-01-01";
        let start = cf_time_period("2020-01-03", units, "standard")?;
        let stop = cf_time_period("2020-01-10", units, "standard")?;
        assert_eq!(stop, (216.0, 240.0));
        let (a, b) = Bound::periods(Some(start), Some(stop), false);
        assert_eq!(value_range(&hours, a, b)?, 48..240);
        // Each resolution names its whole period.
        assert_eq!(cf_time_period("2020", units, "standard")?, (0.0, 8784.0));
        assert_eq!(cf_time_period("2020-02", units, "noleap")?, (744.0, 1416.0));
        assert_eq!(
            cf_time_period("2020-01-02T05", units, "standard")?,
            (29.0, 30.0)
        );
        let minute = cf_time_period("2020-01-02T05:30", units, "standard")?;
        assert!((minute.1 - minute.0 - 1.0 / 60.0).abs() < 1e-12);
        let instant = cf_time_period("2020-01-02T05:30:00.5", units, "standard")?;
        assert_eq!(instant.0, instant.1);
        // Descending: from the end of the later day down to the start of the earlier one.
        let down: Vec<f64> = hours.iter().rev().copied().collect();
        let (a, b) = Bound::periods(Some(stop), Some(start), true);
        assert_eq!(value_range(&down, a, b)?, 48..240);
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
