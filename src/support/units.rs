//! Byte, fraction and duration units as people write them (`"8MiB"`, `"10%"`, `"30s"`).
//!
//! Shared by the pipeline file, the command line and every report that prints a size, so
//! that a value reads and parses the same way everywhere. Parsers return a message (not
//! an [`crate::Error`]): the caller knows the key or flag and adds the location.

use std::time::Duration;

/// Parse `"8MiB"`, `"64 KiB"`, `"1GB"`, `"4096"` into bytes (binary and decimal units).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "invalid size {s:?}: negative sizes are not allowed (write e.g. \"8MiB\")"
        ));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB, e.g. \"8MiB\")"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number with a unit, e.g. \"8MiB\""))?;
    if n <= 0.0 || !n.is_finite() {
        return Err(format!("invalid size {s:?}: must be positive"));
    }
    Ok((n * mult as f64).round() as u64)
}

/// Parse `"10%"` or `"0.1"` into a fraction.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let bad =
        || format!("invalid fraction {s:?}: write a percentage like \"10%\" or a number like 0.1");
    if let Some(p) = t.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map(|v| v / 100.0)
            .map_err(|_| bad())
    } else {
        t.parse::<f64>().map_err(|_| bad())
    }
}

/// Parse `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`, `"1w"` into a duration.
///
/// # Errors
/// A message naming the accepted units.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected e.g. \"500ms\", \"30s\", \"5m\", \"2h\", \"7d\"")
    })?;
    let secs = |m: u64| Duration::from_secs(n.saturating_mul(m));
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" | "" => secs(1),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        u => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h, d or w)"
            ))
        }
    })
}

/// Bytes as a short human string (binary units).
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", U[i])
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("3 fortnights").is_err());
        assert_eq!(parse_fraction("10%").unwrap(), 0.1);
    }
}
