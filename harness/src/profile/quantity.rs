//! Kubernetes-style quantities ("64Mi", "1G", "67108864") for profile sizes.

use std::fmt;

use serde::Serializer;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity \"{input}\": {reason}")]
pub struct QuantityError {
    pub input: String,
    pub reason: String,
}

/// Parses a Kubernetes-style quantity into bytes: binary suffixes Ki Mi Gi Ti Pi Ei, decimal
/// k (or K) M G T P E, or none. Fractions round up, as Kubernetes does for storage.
pub fn parse_quantity(input: &str) -> Result<u64, QuantityError> {
    let fail = |reason: &str| QuantityError {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let text = input.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.starts_with('-') {
        return Err(fail("must not be negative"));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => {
            return Err(fail(&format!(
                "unknown suffix \"{suffix}\" (use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or none)"
            )));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 18 {
        return Err(fail(
            "expected a number, optionally followed by a unit suffix",
        ));
    }
    let too_large = || fail("does not fit in 64 bits");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        let scale = 10u128.pow(fraction.len() as u32);
        let digits: u128 = fraction.parse().map_err(|_| fail("invalid fraction"))?;
        bytes += (digits * multiplier).div_ceil(scale);
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// The shortest exact form: `64Mi` rather than `67108864`; other values stay plain integers.
pub fn format_quantity(bytes: u64) -> String {
    for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

pub(super) fn is_unlimited(bytes: &u64) -> bool {
    *bytes == u64::MAX
}

pub(super) fn ser_bytes<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    match format_quantity(*bytes) {
        s if s.ends_with('i') => serializer.serialize_str(&s),
        _ => serializer.serialize_u64(*bytes),
    }
}

// One function per field because `deserialize_with` cannot pass the field name, and the
// error message should say which size was wrong.
pub(super) fn de_volume_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(BytesVisitor("sizes.volume_bytes"))
}
pub(super) fn de_min_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(BytesVisitor("sizes.min_bytes"))
}
pub(super) fn de_max_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(BytesVisitor("sizes.max_bytes"))
}

struct BytesVisitor(&'static str);

impl Visitor<'_> for BytesVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: a byte count or a quantity such as \"64Mi\"", self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{}: must not be negative", self.0)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_quantity(v).map_err(|e| E::custom(format!("{}: {e}", self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn quantities() {
        let cases = [
            ("0", 0),
            ("1Ki", 1024),
            ("64Mi", 64 * MI),
            ("1Gi", 1 << 30),
            ("1Ti", 1 << 40),
            ("1k", 1000),
            ("1K", 1000),
            ("5M", 5_000_000),
            ("1G", 1_000_000_000),
            ("2T", 2_000_000_000_000),
            ("1.5Gi", 3 << 29),
            ("0.5Ki", 512),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_quantity(text), Ok(bytes), "{text}");
        }
        for bad in ["", "Gi", "1Xi", "-1Gi", "1.2.3", "20Ei", "1m"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
        assert_eq!(format_quantity(64 * MI), "64Mi");
        assert_eq!(format_quantity(1000), "1000");
    }
}
