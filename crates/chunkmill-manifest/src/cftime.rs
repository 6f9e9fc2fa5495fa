//! CF time: units like `hours since 2020-01-01 06:00` and dates in the calendars that
//! xarray (through cftime) decodes: standard/gregorian/proleptic_gregorian, noleap/365_day,
//! all_leap/366_day and 360_day. Convert's date selection and the combine's re-basing of
//! per-file reference dates share this one reading of the convention.

/// A calendar date and the seconds into that day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Date {
    /// Year (astronomical numbering: year 0 exists).
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// Seconds since midnight.
    pub seconds: f64,
}

impl Date {
    /// A date at midnight.
    #[must_use]
    pub fn ymd(year: i64, month: u32, day: u32) -> Self {
        Self {
            year,
            month,
            day,
            seconds: 0.0,
        }
    }
}

/// Reads `2020`, `2020-01`, `2020-01-31`, `2020-1-31 06:00`, `2020-01-31T06:30:15.5Z`; a
/// missing month or day is the first.
#[must_use]
pub fn parse_date(text: &str) -> Option<Date> {
    let text = text.trim();
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (text, None),
    };
    // A leading minus is a negative year, not a separator.
    let (sign, date) = match date.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, date),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next().map_or(Some(1), |m| m.parse().ok())?;
    let day: u32 = parts.next().map_or(Some(1), |d| d.parse().ok())?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut seconds = 0.0;
    if let Some(time) = time.filter(|t| !t.is_empty()) {
        // A UTC designator or a zero offset (`Z`, `+00:00`, `UTC`) changes nothing; another
        // offset is not read.
        let time = time
            .trim_end_matches('Z')
            .trim_end_matches("UTC")
            .trim_end_matches("+00:00")
            .trim_end_matches("+0000")
            .trim();
        for (i, part) in time.split(':').enumerate() {
            let value: f64 = part.parse().ok()?;
            seconds += value * [3600.0, 60.0, 1.0].get(i)?;
        }
    }
    Some(Date {
        year: sign * year,
        month,
        day,
        seconds,
    })
}

/// Days from 1970-01-01 in the proleptic Gregorian calendar (the civil-from-days algorithm
/// run backwards).
#[must_use]
pub fn days_gregorian(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days from a fixed origin of `calendar` (only differences are meaningful); `None` for a
/// calendar this does not know (julian, a user-defined one).
#[must_use]
pub fn days_in_calendar(calendar: &str, date: Date) -> Option<i64> {
    const CUMULATIVE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let (y, m, d) = (date.year, date.month, date.day);
    let before_month = *CUMULATIVE.get((m as usize).checked_sub(1)?)?;
    match calendar.to_ascii_lowercase().as_str() {
        "standard" | "gregorian" | "proleptic_gregorian" | "" => Some(days_gregorian(y, m, d)),
        "noleap" | "365_day" => Some(y * 365 + before_month + i64::from(d) - 1),
        "all_leap" | "366_day" => {
            let leap_shift = i64::from(m > 2);
            Some(y * 366 + before_month + leap_shift + i64::from(d) - 1)
        }
        "360_day" => Some(y * 360 + i64::from(m - 1) * 30 + i64::from(d) - 1),
        _ => None,
    }
}

/// CF time units: a unit and a reference date.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeUnits {
    /// Seconds in one unit (`days` → 86400).
    pub seconds_per_unit: f64,
    /// The date that value 0 stands for.
    pub reference: Date,
}

impl TimeUnits {
    /// Reads `<unit> since <date>`.
    ///
    /// # Errors
    /// Says what is not understood: not of that form, an unknown unit, a date that does not
    /// read.
    pub fn parse(units: &str) -> Result<Self, String> {
        let (unit, reference) = units
            .split_once(" since ")
            .ok_or_else(|| format!("units '{units}' are not '<unit> since <date>'"))?;
        let seconds_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
            "days" | "day" | "d" => 86_400.0,
            "hours" | "hour" | "h" | "hr" | "hrs" => 3_600.0,
            "minutes" | "minute" | "min" | "mins" => 60.0,
            "seconds" | "second" | "s" | "sec" | "secs" => 1.0,
            "milliseconds" | "millisecond" | "ms" => 1e-3,
            "microseconds" | "microsecond" | "us" => 1e-6,
            other => return Err(format!("time unit '{other}' is not supported")),
        };
        let reference = parse_date(reference).ok_or_else(|| {
            format!("the reference date of '{units}' is not a date like 2020-01-31 06:00")
        })?;
        Ok(Self {
            seconds_per_unit,
            reference,
        })
    }

    /// Seconds from this reference date to `date`, in `calendar`.
    ///
    /// # Errors
    /// A calendar this does not know.
    pub fn seconds_to(&self, date: Date, calendar: &str) -> Result<f64, String> {
        let days = |d: Date| {
            days_in_calendar(calendar, d)
                .ok_or_else(|| format!("calendar '{calendar}' is not supported"))
        };
        Ok(
            (days(date)? - days(self.reference)?) as f64 * 86_400.0 + date.seconds
                - self.reference.seconds,
        )
    }

    /// `(scale, offset)` such that a value `v` in these units is `v * scale + offset` in
    /// `other`'s, in `calendar`.
    ///
    /// # Errors
    /// A calendar this does not know.
    pub fn rebase_to(&self, other: &Self, calendar: &str) -> Result<(f64, f64), String> {
        let shift = other.seconds_to(self.reference, calendar)?;
        Ok((
            self.seconds_per_unit / other.seconds_per_unit,
            shift / other.seconds_per_unit,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_cf_writes_them() {
        assert_eq!(parse_date("2020"), Some(Date::ymd(2020, 1, 1)));
        assert_eq!(parse_date("2020-1-5"), Some(Date::ymd(2020, 1, 5)));
        let d = parse_date("2020-01-05 06:30:00").map(|d| d.seconds);
        assert_eq!(d, Some(6.5 * 3600.0));
        let z = parse_date("2020-01-05T06:00:00Z").map(|d| d.seconds);
        assert_eq!(z, Some(6.0 * 3600.0));
        assert_eq!(parse_date("2020-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(days_gregorian(1970, 1, 1), 0);
        assert_eq!(days_gregorian(2000, 3, 1), 11_017);
    }

    #[test]
    fn rebasing_hours_since_each_day_to_the_first() -> Result<(), String> {
        let first = TimeUnits::parse("hours since 2020-01-01")?;
        let later = TimeUnits::parse("hours since 2020-03-01 00:00:00")?;
        // 2020 is a leap year: 31 + 29 days; 360_day: 60 days; noleap: 59 days.
        assert_eq!(later.rebase_to(&first, "standard")?, (1.0, 60.0 * 24.0));
        assert_eq!(later.rebase_to(&first, "noleap")?, (1.0, 59.0 * 24.0));
        assert_eq!(later.rebase_to(&first, "360_day")?, (1.0, 60.0 * 24.0));
        let days = TimeUnits::parse("days since 2020-01-02")?;
        assert_eq!(days.rebase_to(&first, "standard")?, (24.0, 24.0));
        assert!(later.rebase_to(&first, "julian").is_err());
        Ok(())
    }
}
