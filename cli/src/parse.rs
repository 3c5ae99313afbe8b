//! Parsers for command-line values that clap cannot read by itself. Each error
//! names the offending value, because clap prints it after the flag name only.

use std::time::Duration;

use p3_objectspace::object::MetaValue;

/// Splits `30s` into `(30, "s")`; `None` without leading digits.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    Some((number.parse().ok()?, unit))
}

/// A duration such as `500ms`, `30s`, `5m`, `2h`, `1d`, or plain seconds (`90`).
/// Zero is refused: its one use, a TTL, would make an object that is gone before
/// anyone can read it.
pub fn duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration {text:?}: use e.g. 500ms, 30s, 5m, 2h, 1d or plain seconds");
    let (number, unit) = number_and_unit(text).ok_or_else(bad)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("duration {text:?} is too long"))?;
    if millis == 0 {
        return Err(format!("invalid duration {text:?}: must be more than zero"));
    }
    Ok(Duration::from_millis(millis))
}

/// A size in bytes: plain (`4096`), binary (`4k`, `4K`, `1KiB`, `1M`, `1MiB`,
/// `1G`, `1GiB`; powers of 1024, as `dd` and `rados bench` read them) or decimal
/// (`1kB`, `1MB`, `1GB`; powers of 1000).
pub fn size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?}: use e.g. 4096, 4k, 1KiB, 1M, 1MiB or 1MB");
    let (number, unit) = number_and_unit(text).ok_or_else(bad)?;
    let multiplier: u64 = match unit {
        "" | "B" | "b" => 1,
        "k" | "K" | "KiB" | "kiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        "G" | "g" | "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// One `--meta K=V`: the key up to the first `=`, the value after it (a number
/// if it reads as one, else text, as the object space stores it).
pub fn meta(text: &str) -> Result<(String, MetaValue), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid metadata {text:?}: expected KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("invalid metadata {text:?}: the key is empty"));
    }
    Ok((key.to_owned(), MetaValue::parse(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_unit() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn bad_durations_name_the_value() {
        for bad in [
            "",
            "s",
            "5x",
            "-5s",
            "1.5h",
            "5 m",
            "0",
            "0ms",
            "99999999999999999999d",
        ] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn sizes_read_binary_and_decimal_suffixes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("0"), Ok(0));
        assert_eq!(size("4k"), Ok(4096));
        assert_eq!(size("1KiB"), Ok(1024));
        assert_eq!(size("1M"), Ok(1 << 20));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("1MB"), Ok(1_000_000));
        assert_eq!(size("10B"), Ok(10));
    }

    #[test]
    fn bad_sizes_name_the_value() {
        for bad in ["", "k", "1.5M", "-1", "4 k", "1TB", "99999999999999999999G"] {
            let err = size(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn meta_splits_at_the_first_equals_sign() {
        assert_eq!(
            meta("owner=alice").unwrap(),
            ("owner".into(), MetaValue::Str("alice".into()))
        );
        assert_eq!(meta("n=42").unwrap(), ("n".into(), MetaValue::Num(42.0)));
        assert_eq!(
            meta("eq=a=b").unwrap(),
            ("eq".into(), MetaValue::Str("a=b".into()))
        );
        assert_eq!(
            meta("empty=").unwrap(),
            ("empty".into(), MetaValue::Str(String::new()))
        );
    }

    #[test]
    fn meta_refuses_a_missing_equals_sign_or_an_empty_key() {
        let err = meta("owner").unwrap_err();
        assert!(
            err.contains("\"owner\"") && err.contains("KEY=VALUE"),
            "{err}"
        );
        let err = meta("=alice").unwrap_err();
        assert!(err.contains("key is empty"), "{err}");
        assert!(meta(" =x").is_err());
    }
}
