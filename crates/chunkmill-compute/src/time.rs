//! CF time on a coordinate: its values decoded through `units` and `calendar` (the arithmetic
//! is `chunkmill-cftime`'s, shared with convert), the groups of `groupby("time.month")` and
//! the bins of `resample(time="1MS")` as xarray labels them, and date strings for `sel`.

use chunkmill_cftime::{parse_date, Calendar, TimeUnits};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dtype::DType;

/// A time index that belongs to no group (a missing time).
pub const NO_GROUP: u32 = u32::MAX;

const DAY: f64 = 86_400.0;

/// An instant: whole days from the calendar's origin and seconds into the day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moment {
    pub days: i64,
    pub seconds: f64,
}

/// How a coordinate's numbers are dates.
#[derive(Clone, Copy, Debug)]
pub struct TimeAxis {
    pub calendar: Calendar,
    units: TimeUnits,
    reference_days: i64,
}

impl TimeAxis {
    /// From a coordinate's attributes (`units: "<unit> since <date>"`, `calendar`).
    ///
    /// # Errors
    /// No CF time units, or units or a calendar this does not read.
    pub fn from_attrs(attrs: &Map<String, Value>) -> Result<TimeAxis, String> {
        let units = attrs
            .get("units")
            .and_then(Value::as_str)
            .filter(|u| u.contains(" since "))
            .ok_or("it has no CF time units ('<unit> since <date>')")?;
        let name = attrs.get("calendar").and_then(Value::as_str).unwrap_or("");
        let calendar =
            Calendar::parse(name).ok_or_else(|| format!("calendar '{name}' is not supported"))?;
        let units = TimeUnits::parse(units)?;
        let r = units.reference;
        if !calendar.is_valid(r.year, r.month, r.day) {
            return Err(format!(
                "the reference date of its units is not a day of the {} calendar",
                calendar.name()
            ));
        }
        Ok(TimeAxis {
            calendar,
            units,
            reference_days: calendar.days(r.year, r.month, r.day),
        })
    }

    /// The instant a coordinate value stands for (`None` for NaN).
    #[must_use]
    pub fn decode(&self, value: f64) -> Option<Moment> {
        if !value.is_finite() {
            return None;
        }
        let total = value * self.units.seconds_per_unit + self.units.reference.seconds;
        // Microseconds are cftime's resolution: round away the float error of the product.
        let total = (total * 1e6).round() / 1e6;
        let days = (total / DAY).floor();
        Some(Moment {
            days: self.reference_days + days as i64,
            seconds: total - days * DAY,
        })
    }

    /// The coordinate value of an instant.
    #[must_use]
    pub fn encode(&self, m: Moment) -> f64 {
        ((m.days - self.reference_days) as f64 * DAY + m.seconds - self.units.reference.seconds)
            / self.units.seconds_per_unit
    }

    /// The year, month and day of an instant.
    #[must_use]
    pub fn date(&self, m: Moment) -> (i64, u32, u32) {
        self.calendar.date(m.days)
    }
}

/// Values of a computed coordinate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelValues {
    Numbers { values: Vec<f64>, dtype: DType },
    Text(Vec<String>),
}

impl LabelValues {
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            LabelValues::Numbers { values, .. } => values.len(),
            LabelValues::Text(t) => t.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels at `index`.
    #[must_use]
    pub fn pick(&self, index: &[u64]) -> LabelValues {
        match self {
            LabelValues::Numbers { values, dtype } => LabelValues::Numbers {
                values: index.iter().map(|&i| values[i as usize]).collect(),
                dtype: *dtype,
            },
            LabelValues::Text(t) => {
                LabelValues::Text(index.iter().map(|&i| t[i as usize].clone()).collect())
            }
        }
    }
}

/// Which time indices go together, and the label of each group, in the order xarray gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Grouping {
    /// The grouped dimension (`time`).
    pub dim: String,
    /// The dimension of the groups (`month`, `season`, or `time` for a resample).
    pub out_dim: String,
    /// The group of each index along `dim` ([`NO_GROUP`] for none).
    pub groups: Vec<u32>,
    pub labels: LabelValues,
    /// Attributes of the label coordinate (a resample's CF units and calendar).
    pub label_attrs: Map<String, Value>,
    /// Whether some group has no member (a resample bin without data: NaN, as xarray).
    pub has_empty: bool,
}

impl Grouping {
    /// The number of groups.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.len() == 0
    }
}

/// The virtual variables of `groupby("time.KEY")` that this reads.
pub const GROUP_KEYS: &str = "year, month, day, hour, dayofyear, season";

fn season(month: u32) -> &'static str {
    match month {
        12 | 1 | 2 => "DJF",
        3..=5 => "MAM",
        6..=8 => "JJA",
        _ => "SON",
    }
}

/// `groupby("DIM.KEY")` over decoded times: groups are the distinct keys, sorted (seasons
/// alphabetically, as xarray sorts strings).
///
/// # Errors
/// A key this does not know.
pub fn group_by(dim: &str, key: &str, axis: &TimeAxis, values: &[f64]) -> Result<Grouping, String> {
    let key_of = |m: Moment| -> Option<Key> {
        let (y, mo, d) = axis.date(m);
        Some(match key {
            "year" => Key::Number(y as f64),
            "month" => Key::Number(f64::from(mo)),
            "day" => Key::Number(f64::from(d)),
            "hour" => Key::Number((m.seconds / 3600.0).floor()),
            "dayofyear" => Key::Number(f64::from(axis.calendar.day_of_year(y, mo, d))),
            "season" => Key::Text(season(mo)),
            _ => return None,
        })
    };
    if key_of(Moment {
        days: 0,
        seconds: 0.0,
    })
    .is_none()
    {
        return Err(format!(
            "groupby: unknown key '{dim}.{key}'; keys: {}",
            GROUP_KEYS
                .split(", ")
                .map(|k| format!("{dim}.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let keys: Vec<Option<Key>> = values
        .iter()
        .map(|&v| axis.decode(v).and_then(key_of))
        .collect();
    let mut distinct: Vec<Key> = keys.iter().flatten().cloned().collect();
    distinct.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    distinct.dedup();
    let groups = keys
        .iter()
        .map(|k| {
            k.as_ref()
                .and_then(|k| distinct.iter().position(|d| d == k))
                .map_or(NO_GROUP, |i| i as u32)
        })
        .collect();
    let labels = if key == "season" {
        LabelValues::Text(
            distinct
                .iter()
                .map(|k| match k {
                    Key::Text(s) => (*s).to_string(),
                    Key::Number(n) => n.to_string(),
                })
                .collect(),
        )
    } else {
        LabelValues::Numbers {
            values: distinct
                .iter()
                .map(|k| match k {
                    Key::Number(n) => *n,
                    Key::Text(_) => f64::NAN,
                })
                .collect(),
            dtype: DType::Int64,
        }
    };
    Ok(Grouping {
        dim: dim.to_string(),
        out_dim: key.to_string(),
        groups,
        labels,
        label_attrs: Map::new(),
        has_empty: false,
    })
}

#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Key {
    Number(f64),
    Text(&'static str),
}

/// A resample frequency: `n` steps of a unit, anchored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Freq {
    /// Fixed lengths in seconds (`D`, `h`, `min`), counted from midnight of the first day.
    Seconds(f64),
    /// Months counted from a period start: `step` months per period, periods starting in
    /// months congruent to `anchor` (0-based) modulo `step`.
    Months { step: i64, anchor: i64 },
}

/// Resample bins: bin 0 holds the first time; each is `width` units of the frequency.
struct Bins<'a> {
    freq: Freq,
    /// Seconds or months per bin.
    width: f64,
    /// The start of bin 0: days (fixed lengths) or a month index (year × 12 + month − 1).
    origin: i64,
    axis: &'a TimeAxis,
}

impl<'a> Bins<'a> {
    fn new(freq: Freq, n: i64, first: Moment, axis: &'a TimeAxis) -> Self {
        match freq {
            Freq::Seconds(unit) => Bins {
                freq,
                width: unit * n as f64,
                origin: first.days,
                axis,
            },
            Freq::Months { step, anchor } => {
                let mi = Self::month_index(axis, first);
                Bins {
                    freq,
                    width: (step * n) as f64,
                    origin: mi - (mi - anchor).rem_euclid(step),
                    axis,
                }
            }
        }
    }

    fn month_index(axis: &TimeAxis, m: Moment) -> i64 {
        let (y, mo, _) = axis.date(m);
        y * 12 + i64::from(mo) - 1
    }

    /// The bin of a moment.
    fn bin(&self, m: Moment) -> i64 {
        match self.freq {
            Freq::Seconds(_) => {
                (((m.days - self.origin) as f64 * DAY + m.seconds) / self.width).floor() as i64
            }
            Freq::Months { .. } => {
                (Self::month_index(self.axis, m) - self.origin).div_euclid(self.width as i64)
            }
        }
    }

    /// The start of bin `b`.
    fn start(&self, b: i64) -> Moment {
        match self.freq {
            Freq::Seconds(_) => {
                let s = b as f64 * self.width;
                let days = (s / DAY).floor();
                Moment {
                    days: self.origin + days as i64,
                    seconds: s - days * DAY,
                }
            }
            Freq::Months { .. } => {
                let start = self.origin + b * self.width as i64;
                let (y, mo) = (start.div_euclid(12), start.rem_euclid(12) as u32 + 1);
                Moment {
                    days: self.axis.calendar.days(y, mo, 1),
                    seconds: 0.0,
                }
            }
        }
    }
}

/// The resample frequencies this reads.
pub const FREQUENCIES: &str =
    "nD, nh, nmin, nMS, nQS (QS-JAN … QS-DEC), nYS (also AS; YS-JAN … YS-DEC)";

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

fn parse_freq(text: &str) -> Option<(i64, Freq)> {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let n: i64 = if digits == 0 {
        1
    } else {
        text[..digits].parse().ok()?
    };
    if n < 1 {
        return None;
    }
    let unit = &text[digits..];
    let (base, anchor) = match unit.split_once('-') {
        Some((b, a)) => (b, Some(MONTHS.iter().position(|m| *m == a)? as i64)),
        None => (unit, None),
    };
    let freq = match (base, anchor) {
        ("D", None) => Freq::Seconds(DAY),
        ("h" | "H", None) => Freq::Seconds(3600.0),
        ("min" | "T", None) => Freq::Seconds(60.0),
        ("MS", None) => Freq::Months { step: 1, anchor: 0 },
        ("QS", a) => Freq::Months {
            step: 3,
            anchor: a.unwrap_or(0),
        },
        ("YS" | "AS", a) => Freq::Months {
            step: 12,
            anchor: a.unwrap_or(0),
        },
        _ => return None,
    };
    Some((n, freq))
}

/// `resample(DIM=FREQ)` over decoded times: bins closed on the left and labelled by their
/// start (pandas' defaults for these frequencies), from the first time's bin to the last's,
/// empty bins included; labels are encoded in the coordinate's own units.
///
/// # Errors
/// A frequency this does not read, or a coordinate without any time.
pub fn resample(
    dim: &str,
    freq: &str,
    axis: &TimeAxis,
    attrs: &Map<String, Value>,
    values: &[f64],
) -> Result<Grouping, String> {
    let (n, f) = parse_freq(freq).ok_or_else(|| {
        format!("resample: frequency '{freq}' is not supported; frequencies: {FREQUENCIES}")
    })?;
    let moments: Vec<Option<Moment>> = values.iter().map(|&v| axis.decode(v)).collect();
    let first = moments
        .iter()
        .flatten()
        .min_by(|a, b| {
            (a.days, a.seconds)
                .partial_cmp(&(b.days, b.seconds))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .copied()
        .ok_or_else(|| format!("resample: '{dim}' holds no time"))?;
    let bins_of = Bins::new(f, n, first, axis);
    let bins: Vec<Option<i64>> = moments.iter().map(|m| m.map(|m| bins_of.bin(m))).collect();
    let last = bins.iter().flatten().copied().max().unwrap_or(0);
    let count = (last + 1) as usize;
    let mut seen = vec![false; count];
    let groups: Vec<u32> = bins
        .iter()
        .map(|b| match b {
            Some(b) => {
                seen[*b as usize] = true;
                *b as u32
            }
            None => NO_GROUP,
        })
        .collect();
    let encoded: Vec<f64> = (0..count as i64)
        .map(|b| axis.encode(bins_of.start(b)))
        .collect();
    let integral = encoded.iter().all(|v| v.fract() == 0.0 && v.abs() < 9e15);
    let mut label_attrs = Map::new();
    for (k, v) in attrs {
        if !matches!(k.as_str(), "_FillValue" | "missing_value" | "dtype") {
            label_attrs.insert(k.clone(), v.clone());
        }
    }
    Ok(Grouping {
        dim: dim.to_string(),
        out_dim: dim.to_string(),
        groups,
        labels: LabelValues::Numbers {
            values: encoded,
            dtype: if integral {
                DType::Int64
            } else {
                DType::Float64
            },
        },
        label_attrs,
        has_empty: seen.iter().any(|s| !s),
    })
}

/// How finely a date string is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Resolution {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// The instants `[start, end)` a date string covers (`2001` is the year, `2001-03` the
/// month, `2001-03-01` the day, `2001-03-01 06` the hour …).
fn period(text: &str, axis: &TimeAxis) -> Result<(Moment, Moment, Resolution), String> {
    let cal = axis.calendar;
    let bad = || format!("'{text}' is not a date (YYYY[-MM[-DD[ HH[:MM[:SS]]]]])");
    let date = parse_date(text).ok_or_else(bad)?;
    let trimmed = text.trim();
    let (day_part, time_part) = match trimmed.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (trimmed, None),
    };
    let fields = day_part.trim_start_matches('-').split('-').count();
    let resolution = match (fields, time_part.map(|t| t.split(':').count())) {
        (1, None) => Resolution::Year,
        (2, None) => Resolution::Month,
        (3, None) => Resolution::Day,
        (3, Some(1)) => Resolution::Hour,
        (3, Some(2)) => Resolution::Minute,
        (3, Some(_)) => Resolution::Second,
        _ => return Err(bad()),
    };
    if !cal.is_valid(date.year, date.month, date.day) {
        return Err(format!(
            "'{text}' is not a date of the {} calendar",
            cal.name()
        ));
    }
    let start = Moment {
        days: cal.days(date.year, date.month, date.day),
        seconds: date.seconds,
    };
    let end = match resolution {
        Resolution::Year => Moment {
            days: cal.days(date.year + 1, 1, 1),
            seconds: 0.0,
        },
        Resolution::Month => {
            let (y, m) = if date.month == 12 {
                (date.year + 1, 1)
            } else {
                (date.year, date.month + 1)
            };
            Moment {
                days: cal.days(y, m, 1),
                seconds: 0.0,
            }
        }
        Resolution::Day => Moment {
            days: start.days + 1,
            seconds: 0.0,
        },
        Resolution::Hour => Moment {
            days: start.days,
            seconds: start.seconds + 3600.0,
        },
        Resolution::Minute => Moment {
            days: start.days,
            seconds: start.seconds + 60.0,
        },
        Resolution::Second => Moment {
            days: start.days,
            seconds: start.seconds + 1.0,
        },
    };
    Ok((start, end, resolution))
}

/// What a date selects along a time coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateSel {
    /// One index: the dimension goes.
    Index(u64),
    /// `len` indices from `start`: the dimension stays.
    Range { start: u64, len: u64 },
}

fn inside(values: &[f64], axis: &TimeAxis, from: Option<Moment>, to: Option<Moment>) -> (u64, u64) {
    let lo = from.map(|m| axis.encode(m));
    let hi = to.map(|m| axis.encode(m));
    let ok = |v: f64| lo.is_none_or(|l| v >= l) && hi.is_none_or(|h| v < h);
    match values.iter().position(|&v| ok(v)) {
        None => (0, 0),
        Some(s) => (
            s as u64,
            values[s..].iter().take_while(|&&v| ok(v)).count() as u64,
        ),
    }
}

/// `sel(DIM="2001-03-01")`. As xarray: on a coordinate it decodes to numpy datetimes (the
/// Gregorian calendars), a date at least as fine as the coordinate's own resolution is one
/// exact label (the dimension goes) and a coarser one a slice; on cftime calendars a date
/// string is always a slice. An empty selection is an error.
///
/// # Errors
/// A string that is not a date of the calendar, or a date no label matches.
pub fn sel_date(text: &str, axis: &TimeAxis, values: &[f64]) -> Result<DateSel, String> {
    let (start, end, resolution) = period(text, axis)?;
    let gregorian = matches!(
        axis.calendar,
        Calendar::Standard | Calendar::ProlepticGregorian
    );
    if gregorian && resolution >= coordinate_resolution(axis, values) {
        let want = axis.encode(start);
        return values
            .iter()
            .position(|&v| v == want)
            .map(|i| DateSel::Index(i as u64))
            .ok_or_else(|| format!("no time {text} in the coordinate"));
    }
    let (s, len) = inside(values, axis, Some(start), Some(end));
    if len == 0 {
        return Err(format!("no time within {text} in the coordinate"));
    }
    Ok(DateSel::Range { start: s, len })
}

/// `sel(DIM=slice("2001-01", "2001-06-15"))`: from the start of the first period to the
/// end of the last, both included. Returns start and length (possibly empty, as xarray).
///
/// # Errors
/// A bound that is not a date of the calendar.
pub fn sel_date_slice(
    from: Option<&str>,
    to: Option<&str>,
    axis: &TimeAxis,
    values: &[f64],
) -> Result<(u64, u64), String> {
    let lo = from.map(|t| period(t, axis)).transpose()?.map(|p| p.0);
    let hi = to.map(|t| period(t, axis)).transpose()?.map(|p| p.1);
    Ok(inside(values, axis, lo, hi))
}

/// pandas' resolution of a datetime index: the finest unit its times need.
fn coordinate_resolution(axis: &TimeAxis, values: &[f64]) -> Resolution {
    let mut finest = Resolution::Day;
    for m in values.iter().filter_map(|&v| axis.decode(v)) {
        let r = if m.seconds == 0.0 {
            Resolution::Day
        } else if m.seconds % 3600.0 == 0.0 {
            Resolution::Hour
        } else if m.seconds % 60.0 == 0.0 {
            Resolution::Minute
        } else {
            Resolution::Second
        };
        finest = finest.max(r);
    }
    finest
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn axis(units: &str, calendar: &str) -> Result<TimeAxis, String> {
        let attrs = json!({"units": units, "calendar": calendar});
        TimeAxis::from_attrs(attrs.as_object().ok_or("not an object")?)
    }

    fn numbers(g: &Grouping) -> Vec<f64> {
        match &g.labels {
            LabelValues::Numbers { values, .. } => values.clone(),
            LabelValues::Text(_) => Vec::new(),
        }
    }

    #[test]
    fn months_and_seasons_group_as_xarray_labels_them() -> Result<(), String> {
        // 360_day, daily from 2000-11-21: xarray gives months [1 .. 6, 11, 12].
        let a = axis("days since 2000-11-01", "360_day")?;
        let values: Vec<f64> = (20..220).map(f64::from).collect();
        let g = group_by("time", "month", &a, &values)?;
        assert_eq!(numbers(&g), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 11.0, 12.0]);
        assert_eq!(g.groups[0], 6, "2000-11-21 is in November");
        assert_eq!(g.groups[10], 7, "2000-12-01");
        assert_eq!(g.groups[40], 0, "2001-01-01");
        let s = group_by("time", "season", &a, &values)?;
        assert_eq!(
            s.labels,
            LabelValues::Text(vec!["DJF".into(), "JJA".into(), "MAM".into(), "SON".into()])
        );
        assert_eq!(s.groups[0], 3);
        let e = group_by("time", "fortnight", &a, &values).err();
        assert!(e.is_some_and(|e| e.starts_with("groupby: unknown key 'time.fortnight'")));
        Ok(())
    }

    #[test]
    fn day_of_year_follows_the_calendar() -> Result<(), String> {
        // 2001-03-01 is day 60 in noleap and standard, 61 in all_leap, 61 in 360_day.
        for (cal, doy) in [
            ("noleap", 60.0),
            ("standard", 60.0),
            ("all_leap", 61.0),
            ("360_day", 61.0),
        ] {
            let a = axis("days since 2001-03-01", cal)?;
            let g = group_by("time", "dayofyear", &a, &[0.0])?;
            assert_eq!(numbers(&g), [doy], "{cal}");
        }
        Ok(())
    }

    #[test]
    fn resample_bins_start_at_the_period_and_keep_empty_bins() -> Result<(), String> {
        // xarray: QS-DEC of 360_day data from 2000-11-21 starts at 2000-09-01.
        let a = axis("days since 2000-11-01", "360_day")?;
        let values: Vec<f64> = (20..220).map(f64::from).collect();
        let g = resample("time", "QS-DEC", &a, &Map::new(), &values)?;
        // Labels in days since 2000-11-01: 2000-09-01 is -60, then every 90 days.
        assert_eq!(numbers(&g), [-60.0, 30.0, 120.0, 210.0]);
        assert_eq!((g.groups[0], g.groups[9], g.groups[10]), (0, 0, 1));
        assert!(!g.has_empty);
        // Two days a month apart leave the month between empty.
        let a = axis("hours since 2001-01-01", "noleap")?;
        let g = resample("time", "1MS", &a, &Map::new(), &[0.0, 24.0 * 60.0])?;
        assert_eq!(numbers(&g), [0.0, 31.0 * 24.0, 59.0 * 24.0]);
        assert_eq!(g.groups, [0, 2]);
        assert!(g.has_empty);
        let g = resample("time", "2D", &a, &Map::new(), &[12.0, 30.0, 50.0, 100.0])?;
        assert_eq!(numbers(&g), [0.0, 48.0, 96.0]);
        assert_eq!(g.groups, [0, 0, 1, 2]);
        let e = resample("time", "1W", &a, &Map::new(), &[0.0]).err();
        assert!(e.is_some_and(|e| e.contains("frequency '1W' is not supported")));
        Ok(())
    }

    #[test]
    fn dates_select_as_xarray_does() -> Result<(), String> {
        let a = axis("days since 2001-01-01", "standard")?;
        let daily: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(sel_date("2001-03-01", &a, &daily)?, DateSel::Index(59));
        assert_eq!(
            sel_date("2001-02", &a, &daily)?,
            DateSel::Range { start: 31, len: 28 }
        );
        assert_eq!(
            sel_date_slice(Some("2001-01"), Some("2001-02-15"), &a, &daily)?,
            (0, 46)
        );
        let e = sel_date("2001-02-30", &a, &daily).err();
        assert!(e.is_some_and(|e| e.contains("not a date of the standard calendar")));
        // cftime calendars: always a slice.
        let a = axis("days since 2001-01-01", "360_day")?;
        assert_eq!(
            sel_date("2001-02-30", &a, &daily)?,
            DateSel::Range { start: 59, len: 1 }
        );
        let a = axis("hours since 2001-01-01", "standard")?;
        let six_hourly: Vec<f64> = (0..20).map(|i| f64::from(i) * 6.0).collect();
        assert_eq!(
            sel_date("2001-01-02", &a, &six_hourly)?,
            DateSel::Range { start: 4, len: 4 }
        );
        assert_eq!(
            sel_date("2001-01-02 06", &a, &six_hourly)?,
            DateSel::Index(5)
        );
        Ok(())
    }
}
