//! What `convert` selects: coordinate values (CF times included) and index ranges resolved to
//! one window per axis, and the window's chunks cut at the source's chunk boundaries.

use chunkmill_grid::AxisChunks;
use chunkmill_manifest::cftime::{days_in_calendar, parse_date, Date, TimeUnits};
use chunkmill_plan::{AxisWindow, ValueMap};
use chunkmill_store::TimeUnit;

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

fn parsed(text: &str) -> Result<Date, String> {
    parse_date(text.trim())
        .ok_or_else(|| format!("'{text}' is not a date like 2020-01-31 or 2020-01-31T12:00"))
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
    let units = TimeUnits::parse(units)?;
    let per_unit = units.seconds_per_unit;
    let date = parsed(text)?;
    let trimmed = text.trim().trim_end_matches('Z');
    let (day_part, time_part) = match trimmed.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (trimmed, None),
    };
    let (y, m) = (date.year, date.month);
    let start = units.seconds_to(date, calendar)?;
    let end = match (day_part.split('-').count(), time_part) {
        (1, None) => units.seconds_to(Date::ymd(y + 1, 1, 1), calendar)?,
        (2, None) => {
            let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            units.seconds_to(Date::ymd(next.0, next.1, 1), calendar)?
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

/// The units a datetime64 coordinate's dates are counted in once read by
/// [`datetime64_seconds`]: numpy's epoch, in its proleptic Gregorian calendar.
pub(crate) const DATETIME64_UNITS: &str = "seconds since 1970-01-01";

/// The calendar of numpy's datetime64.
pub(crate) const DATETIME64_CALENDAR: &str = "proleptic_gregorian";

/// The instants of a datetime64 array (int64 counts of `unit` since 1970-01-01) as seconds
/// since then, NaT as NaN: what a date selection compares, as xarray selects on the dates.
///
/// # Errors
/// A unit with no date (`generic`), named.
pub(crate) fn datetime64_seconds(bytes: &[u8], unit: &TimeUnit) -> Result<Vec<f64>, String> {
    let scale = f64::from(unit.scale_factor);
    // Years and months are calendar steps, not fixed lengths: counted as dates.
    let month_start = |months: i64| {
        let (year, month) = (1970 + months.div_euclid(12), months.rem_euclid(12) + 1);
        days_in_calendar(DATETIME64_CALENDAR, Date::ymd(year, month as u32, 1)).map_or(
            f64::NAN,
            |days| {
                (days - days_in_calendar(DATETIME64_CALENDAR, Date::ymd(1970, 1, 1)).unwrap_or(0))
                    as f64
                    * 86_400.0
            },
        )
    };
    let seconds = |count: i64| -> Result<f64, String> {
        let step = unit.scale_factor as i64;
        Ok(match unit.unit.as_str() {
            "Y" => month_start(count.saturating_mul(step).saturating_mul(12)),
            "M" => month_start(count.saturating_mul(step)),
            "W" => count as f64 * scale * 604_800.0,
            "D" => count as f64 * scale * 86_400.0,
            "h" => count as f64 * scale * 3_600.0,
            "m" => count as f64 * scale * 60.0,
            "s" => count as f64 * scale,
            "ms" => count as f64 * scale * 1e-3,
            "us" => count as f64 * scale * 1e-6,
            "ns" => count as f64 * scale * 1e-9,
            "ps" => count as f64 * scale * 1e-12,
            "fs" => count as f64 * scale * 1e-15,
            "as" => count as f64 * scale * 1e-18,
            other => return Err(format!("datetime64 of unit '{other}' holds no dates")),
        })
    };
    bytes
        .chunks_exact(8)
        .map(|b| {
            let count = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            if count == i64::MIN {
                Ok(f64::NAN)
            } else {
                seconds(count)
            }
        })
        .collect()
}

/// Why the date `text` names a day `calendar` does not have (February 30, February 29 of
/// a year without one, the 31st in the 360-day calendar), as pandas and cftime refuse it;
/// `None` when the day exists or the text is not a date (said elsewhere).
pub(crate) fn missing_day(text: &str, calendar: &str) -> Option<String> {
    let date = parse_date(text.trim())?;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let last = match (calendar.to_ascii_lowercase().as_str(), date.month) {
        ("360_day", _) => 30,
        (_, 4 | 6 | 9 | 11) => 30,
        (_, 2) => match calendar.to_ascii_lowercase().as_str() {
            "noleap" | "365_day" => 28,
            "all_leap" | "366_day" => 29,
            _ if leap(date.year) => 29,
            _ => 28,
        },
        _ => 31,
    };
    (date.day > last).then(|| {
        format!(
            "'{}' is not a date of the {calendar} calendar (its month {} has {last} days)",
            text.trim(),
            date.month
        )
    })
}

pub(crate) fn element_values(
    bytes: &[u8],
    dtype: &chunkmill_store::DataType,
) -> Result<Vec<f64>, String> {
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
        assert!(start_of("2020-01-01", "days since 2020-01-01", "julian").is_err());
        Ok(())
    }

    #[test]
    fn days_a_calendar_lacks() {
        assert!(missing_day("2001-02-29", "standard").is_some());
        assert!(missing_day("2000-02-29", "proleptic_gregorian").is_none());
        assert!(missing_day("1900-02-29", "gregorian").is_some());
        assert!(missing_day("2004-02-29", "noleap").is_some());
        assert!(missing_day("2001-02-29", "all_leap").is_none());
        assert!(missing_day("2001-02-30", "360_day").is_none());
        assert!(missing_day("2001-01-31", "360_day").is_some());
        assert!(missing_day("2001-04-31T06:00", "standard").is_some());
        assert!(missing_day("2001-02", "noleap").is_none());
    }

    #[test]
    fn datetime64_counts_become_seconds_since_the_epoch() -> TestResult {
        let unit = |u: &str, scale: u32| TimeUnit {
            unit: u.into(),
            scale_factor: scale,
        };
        let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            datetime64_seconds(&bytes(&[1, -2]), &unit("D", 1))?,
            vec![86_400.0, -172_800.0]
        );
        assert_eq!(
            datetime64_seconds(&bytes(&[3]), &unit("m", 10))?,
            vec![1_800.0]
        );
        // Months and years are calendar steps: 1970-03-01 is day 59.
        assert_eq!(
            datetime64_seconds(&bytes(&[2]), &unit("M", 1))?,
            vec![59.0 * 86_400.0]
        );
        assert_eq!(
            datetime64_seconds(&bytes(&[1]), &unit("Y", 1))?,
            vec![365.0 * 86_400.0]
        );
        let nat = datetime64_seconds(&bytes(&[i64::MIN]), &unit("ns", 1))?;
        assert!(nat[0].is_nan());
        assert!(datetime64_seconds(&bytes(&[1]), &unit("generic", 1)).is_err());
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
