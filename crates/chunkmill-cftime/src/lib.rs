//! CF time: units like `hours since 2020-01-01 06:00` and dates in the calendars that
//! xarray (through cftime) decodes: standard/gregorian/proleptic_gregorian, noleap/365_day,
//! all_leap/366_day and 360_day. Convert's date selection and the combine's re-basing of
//! per-file reference dates share this one reading of the convention, and compute's
//! resample, groupby and date selection read their time coordinates with it.

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

/// The calendars of the CF conventions that cftime implements, but `julian`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    /// `standard`/`gregorian` (also the default when no `calendar` is given): Julian before
    /// 1582-10-15, Gregorian from then on.
    Standard,
    ProlepticGregorian,
    /// `noleap`/`365_day`.
    NoLeap,
    /// `all_leap`/`366_day`.
    AllLeap,
    /// `360_day`: twelve months of 30 days.
    Day360,
}

/// The Julian day number of 1970-01-01.
const UNIX_JDN: i64 = 2_440_588;
/// The Julian day number of 1582-10-15, the first Gregorian day of the standard calendar.
const GREGORIAN_START_JDN: i64 = 2_299_161;
const CUMULATIVE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

impl Calendar {
    /// By its CF name (case-insensitive; empty is `standard`); `None` for `julian` and
    /// user-defined calendars.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "standard" | "gregorian" | "" => Calendar::Standard,
            "proleptic_gregorian" => Calendar::ProlepticGregorian,
            "noleap" | "365_day" => Calendar::NoLeap,
            "all_leap" | "366_day" => Calendar::AllLeap,
            "360_day" => Calendar::Day360,
            _ => return None,
        })
    }

    /// The name cftime gives it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Calendar::Standard => "standard",
            Calendar::ProlepticGregorian => "proleptic_gregorian",
            Calendar::NoLeap => "noleap",
            Calendar::AllLeap => "all_leap",
            Calendar::Day360 => "360_day",
        }
    }

    /// Whether `year` has a 29 February (Julian rule before 1582 in the standard calendar).
    #[must_use]
    pub fn is_leap(self, year: i64) -> bool {
        let gregorian = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match self {
            Calendar::Standard if year < 1582 => year % 4 == 0,
            Calendar::Standard | Calendar::ProlepticGregorian => gregorian,
            Calendar::NoLeap => false,
            Calendar::AllLeap => true,
            Calendar::Day360 => false,
        }
    }

    /// Days in `month` (1–12) of `year`; 0 for a month that does not exist.
    #[must_use]
    pub fn days_in_month(self, year: i64, month: u32) -> u32 {
        if self == Calendar::Day360 {
            return if (1..=12).contains(&month) { 30 } else { 0 };
        }
        match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if self.is_leap(year) => 29,
            2 => 28,
            _ => 0,
        }
    }

    /// Whether the day exists (the ten days the standard calendar skipped in October 1582
    /// do not).
    #[must_use]
    pub fn is_valid(self, year: i64, month: u32, day: u32) -> bool {
        let skipped =
            self == Calendar::Standard && year == 1582 && month == 10 && (5..15).contains(&day);
        day >= 1 && day <= self.days_in_month(year, month) && !skipped
    }

    /// Days from a fixed origin of the calendar (1970-01-01 for the Gregorian ones; only
    /// differences are meaningful).
    #[must_use]
    pub fn days(self, year: i64, month: u32, day: u32) -> i64 {
        let before_month = CUMULATIVE[(month.clamp(1, 12) - 1) as usize];
        let d = i64::from(day);
        match self {
            Calendar::ProlepticGregorian => days_gregorian(year, month, day),
            Calendar::Standard => {
                let gregorian = days_gregorian(year, month, day);
                if gregorian + UNIX_JDN >= GREGORIAN_START_JDN {
                    gregorian
                } else {
                    julian_day_number(year, month, day) - UNIX_JDN
                }
            }
            Calendar::NoLeap => year * 365 + before_month + d - 1,
            Calendar::AllLeap => year * 366 + before_month + i64::from(month > 2) + d - 1,
            Calendar::Day360 => year * 360 + i64::from(month - 1) * 30 + d - 1,
        }
    }

    /// The date `days` after the origin of [`Calendar::days`]: year, month, day.
    #[must_use]
    pub fn date(self, days: i64) -> (i64, u32, u32) {
        match self {
            Calendar::ProlepticGregorian => gregorian_from_days(days),
            Calendar::Standard if days + UNIX_JDN >= GREGORIAN_START_JDN => {
                gregorian_from_days(days)
            }
            Calendar::Standard => julian_from_day_number(days + UNIX_JDN),
            Calendar::NoLeap | Calendar::AllLeap => {
                let len = if self == Calendar::NoLeap { 365 } else { 366 };
                let year = days.div_euclid(len);
                let mut rest = days.rem_euclid(len);
                let mut month = 1;
                loop {
                    let n = i64::from(self.days_in_month(year, month));
                    if rest < n || month == 12 {
                        return (year, month, rest as u32 + 1);
                    }
                    rest -= n;
                    month += 1;
                }
            }
            Calendar::Day360 => {
                let year = days.div_euclid(360);
                let rest = days.rem_euclid(360);
                (year, (rest / 30) as u32 + 1, (rest % 30) as u32 + 1)
            }
        }
    }

    /// The day of the year, 1 on 1 January (cftime's `dayofyr`, pandas' `dayofyear`).
    #[must_use]
    pub fn day_of_year(self, year: i64, month: u32, day: u32) -> u32 {
        (self.days(year, month, day) - self.days(year, 1, 1) + 1) as u32
    }
}

/// The Julian calendar's day number (days since 4713 BC January 1, noon).
fn julian_day_number(year: i64, month: u32, day: u32) -> i64 {
    let a = (14 - i64::from(month)) / 12;
    let y = year + 4800 - a;
    let m = i64::from(month) + 12 * a - 3;
    i64::from(day) + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - 32_083
}

fn julian_from_day_number(jdn: i64) -> (i64, u32, u32) {
    let c = jdn + 32_082;
    let d = (4 * c + 3).div_euclid(1461);
    let e = c - (1461 * d).div_euclid(4);
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    (d - 4800 + m / 10, month as u32, day as u32)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (the civil-from-days algorithm).
fn gregorian_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Days from a fixed origin of `calendar` (only differences are meaningful); `None` for a
/// calendar this does not know (julian, a user-defined one).
#[must_use]
pub fn days_in_calendar(calendar: &str, date: Date) -> Option<i64> {
    if !(1..=12).contains(&date.month) {
        return None;
    }
    Calendar::parse(calendar).map(|c| c.days(date.year, date.month, date.day))
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

    #[test]
    fn dates_round_trip_through_day_counts_in_every_calendar() {
        for cal in [
            Calendar::Standard,
            Calendar::ProlepticGregorian,
            Calendar::NoLeap,
            Calendar::AllLeap,
            Calendar::Day360,
        ] {
            for days in (-800_000..800_000).step_by(997) {
                let (y, m, d) = cal.date(days);
                assert!(cal.is_valid(y, m, d), "{cal:?} {days} -> {y}-{m}-{d}");
                assert_eq!(cal.days(y, m, d), days, "{cal:?} {y}-{m}-{d}");
            }
        }
    }

    #[test]
    fn calendars_agree_with_cftime() {
        // cftime.date2num(cftime.datetime(Y, M, D, calendar=C), "days since 1970-01-01", C)
        let since_1970 = |c: Calendar, y, m, d| c.days(y, m, d) - c.days(1970, 1, 1);
        assert_eq!(since_1970(Calendar::Standard, 2001, 3, 1), 11_382);
        assert_eq!(since_1970(Calendar::Standard, 1582, 10, 15), -141_427);
        // The day before 1582-10-15 in the standard calendar is Julian 1582-10-04.
        assert_eq!(since_1970(Calendar::Standard, 1582, 10, 4), -141_428);
        assert_eq!(since_1970(Calendar::Standard, 1, 1, 1), -719_164);
        assert_eq!(since_1970(Calendar::ProlepticGregorian, 1, 1, 1), -719_162);
        assert_eq!(since_1970(Calendar::NoLeap, 2001, 3, 1), 11_374);
        assert_eq!(since_1970(Calendar::AllLeap, 2001, 3, 1), 11_406);
        assert_eq!(since_1970(Calendar::Day360, 2001, 3, 1), 11_220);
        assert!(!Calendar::Standard.is_valid(2001, 2, 29));
        assert!(!Calendar::Standard.is_valid(1900, 2, 29));
        assert!(Calendar::Standard.is_valid(1500, 2, 29));
        assert!(Calendar::Day360.is_valid(2001, 2, 30));
        assert!(!Calendar::NoLeap.is_valid(2000, 2, 29));
        assert_eq!(Calendar::Day360.day_of_year(2001, 12, 30), 360);
        assert_eq!(Calendar::AllLeap.day_of_year(2001, 3, 1), 61);
        assert_eq!(Calendar::NoLeap.day_of_year(2000, 3, 1), 60);
    }
}
