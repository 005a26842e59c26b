//! Human units: parsing what users type (`256M`, `0.5`, `30s`) into the exact numbers
//! the protocol carries, and formatting exact numbers back for people.
//!
//! Pure functions, no I/O: shared by the CLI (`qexec run --memory 256M`) and the
//! server's flags (`qexecd --max-memory 1G`) so both read units the same way.

use std::time::Duration;

/// A value a user typed could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Not a size like `256M`.
    #[error(
        "invalid size {text:?}: expected a number with an optional unit \
         K, M, G, T (powers of 1024, also KiB, MiB, GiB, TiB) or none for bytes, e.g. 256M"
    )]
    Size {
        /// What was typed.
        text: String,
    },
    /// Not a duration like `30s`.
    #[error("invalid duration {text:?}: expected a number with a unit ms, s, m, h or d, e.g. 30s")]
    Duration {
        /// What was typed.
        text: String,
    },
    /// Not a CPU amount like `0.5`.
    #[error(
        "invalid CPU amount {text:?}: expected CPUs as a decimal (0.5 = half a CPU, 2 = two CPUs) \
         with at most 3 decimals, or millicpus like 500m"
    )]
    Cpu {
        /// What was typed.
        text: String,
    },
    /// A well-formed value too large for the protocol field.
    #[error("{text:?} is too large (at most {max})")]
    TooLarge {
        /// What was typed.
        text: String,
        /// The largest accepted value, in the field's unit.
        max: u64,
    },
    /// A well-formed CPU amount of zero (a job with no CPU could never run).
    #[error("{text:?} CPUs is no CPU at all: expected more than 0, e.g. 0.5 or 250m")]
    ZeroCpu {
        /// What was typed.
        text: String,
    },
}

/// Parses a decimal like `1.25` into (integer value × 10^scale), i.e. fixed point with
/// `scale` decimals; `None` if malformed or if it has more than `scale` decimals.
fn parse_fixed(text: &str, scale: u32) -> Option<u128> {
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > scale as usize || int.len() > 30 {
        return None;
    }
    let int_v: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut frac_v: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    frac_v *= 10u128.pow(scale - frac.len() as u32);
    int_v.checked_mul(10u128.pow(scale))?.checked_add(frac_v)
}

/// Splits `"256MiB"` into `("256", "MiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..at], &text[at..])
}

/// Parses a byte size: `4096`, `4K`, `256M`, `1.5G`, `2TiB` (powers of 1024).
///
/// Fractions are allowed when the result is a whole number of bytes.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size {
        text: text.to_owned(),
    };
    let t = text.trim();
    let (num, unit) = split_number(t);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(err()),
    };
    // Six decimals are plenty for sizes; more would be noise.
    let fixed = parse_fixed(num, 6).ok_or_else(err)?;
    let scaled = fixed.checked_mul(1u128 << shift).ok_or_else(err)?;
    if scaled % 1_000_000 != 0 {
        return Err(err());
    }
    u64::try_from(scaled / 1_000_000).map_err(|_| UnitError::TooLarge {
        text: text.to_owned(),
        max: u64::MAX,
    })
}

/// Parses a duration: `500ms`, `30s`, `2m`, `1h`, `1d`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration {
        text: text.to_owned(),
    };
    let t = text.trim();
    let (num, unit) = split_number(t);
    let millis_per_unit: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" if num.bytes().all(|b| b == b'0') && !num.is_empty() => 1,
        _ => return Err(err()),
    };
    let fixed = parse_fixed(num, 3).ok_or_else(err)?;
    let millis = fixed.checked_mul(millis_per_unit).ok_or_else(err)?;
    if millis % 1000 != 0 {
        // Below one millisecond: the protocol counts in milliseconds.
        return Err(err());
    }
    let millis = u64::try_from(millis / 1000).map_err(|_| err())?;
    Ok(Duration::from_millis(millis))
}

/// Parses a CPU amount into thousandths of a CPU: `0.5` → 500, `2` → 2000,
/// `250m` → 250.
pub fn parse_cpu(text: &str) -> Result<u32, UnitError> {
    let err = || UnitError::Cpu {
        text: text.to_owned(),
    };
    let t = text.trim();
    let millis = if let Some(m) = t.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        m.parse::<u128>().map_err(|_| err())?
    } else {
        parse_fixed(t, 3).ok_or_else(err)?
    };
    if millis == 0 {
        return Err(UnitError::ZeroCpu {
            text: text.to_owned(),
        });
    }
    u32::try_from(millis).map_err(|_| UnitError::TooLarge {
        text: text.to_owned(),
        max: u64::from(u32::MAX),
    })
}

/// Formats bytes for people: `512 B`, `1.5 KiB`, `256 MiB` (powers of 1024).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if scaled.fract() == 0.0 {
        format!("{scaled:.0} {}", UNITS[unit])
    } else if scaled < 10.0 {
        format!("{scaled:.2} {}", UNITS[unit])
    } else {
        format!("{scaled:.1} {}", UNITS[unit])
    }
}

/// Formats a duration for people: `0ms`, `12ms`, `1.25s`, `3m04s`, `2h05m`, `3d04h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let centis = ms / 10;
        return format!("{}.{:02}s", centis / 100, centis % 100);
    }
    if secs < 3600 {
        return format!("{}m{:02}s", secs / 60, secs % 60);
    }
    if secs < 86_400 {
        return format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60);
    }
    format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600)
}

/// Formats a CPU amount given in thousandths: 500 → `0.5`, 2000 → `2`.
pub fn format_cpu(millis: u32) -> String {
    let int = millis / 1000;
    let frac = millis % 1000;
    if frac == 0 {
        int.to_string()
    } else {
        let s = format!("{int}.{frac:03}");
        s.trim_end_matches('0').to_owned()
    }
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_timestamp(ms_since_epoch: u64) -> String {
    let secs = ms_since_epoch / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("4096B").unwrap(), 4096);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2TiB").unwrap(), 2 << 40);
        assert_eq!(parse_size("10M").unwrap(), 10 * 1024 * 1024);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            "",
            "M",
            "12X",
            "1.5",
            "0.3K",
            "-1",
            "1e6",
            "1 MB",
            "99999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "30", "s", "1.0005s", "1w", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_is_thousandths() {
        assert_eq!(parse_cpu("0.5").unwrap(), 500);
        assert_eq!(parse_cpu(".25").unwrap(), 250);
        assert_eq!(parse_cpu("2").unwrap(), 2000);
        assert_eq!(parse_cpu("250m").unwrap(), 250);
        assert_eq!(parse_cpu("1.125").unwrap(), 1125);
        for bad in ["0", "0.0001", "m", "x", "-1", "99999999"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_are_readable() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(256 << 20), "256 MiB");
        assert_eq!(format_size(123_456_789), "117.7 MiB");
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format_duration(Duration::from_secs(184)), "3m04s");
        assert_eq!(format_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(format_duration(Duration::from_secs(273_600)), "3d04h");
        assert_eq!(format_cpu(500), "0.5");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(1125), "1.125");
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_timestamp(1_795_887_757_000),
            "2026-11-28 17:42:37 UTC"
        );
    }
}
