//! Reading proto3 JSON values the serde derives of `opentelemetry-proto` do
//! not read as the mapping says: the one int64 reader of both binaries
//! (trace-sink's OTLP/JSON `intValue`, trace-gen's partial-success
//! `rejectedSpans`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A proto3 JSON int64: a JSON number or a string holding one, integral
/// (`5`, `"5"`, `5.0`, `"5e0"`) and in range; anything else is an error.
/// The mapping writes int64 as a decimal string and accepts numbers and
/// exponent notation too. Read without buffering the value first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int64(pub i64);

/// `f` as an int64, if it is integral and in range.
fn integral(f: f64) -> Option<i64> {
    (f.is_finite() && f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64)
        .then_some(f as i64)
}

impl Int64 {
    /// Parses the string form: decimal digits, else a number in any JSON
    /// notation that is integral.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse::<i64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(integral))
            .map(Int64)
    }
}

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an int64 as a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int64, E> {
                Ok(Int64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int64, E> {
                i64::try_from(v)
                    .map(Int64)
                    .map_err(|_| E::custom(format!("{v} is out of int64 range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Int64, E> {
                integral(v)
                    .map(Int64)
                    .ok_or_else(|| E::custom(format!("{v} is not an int64")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int64, E> {
                Int64::parse(v).ok_or_else(|| E::custom(format!("{v:?} is not an int64")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every proto3 form of an int64 reads; fractions, out-of-range values
    /// and other JSON kinds do not.
    #[test]
    fn int64_in_every_proto3_form() {
        let read = |j: &str| serde_json::from_str::<Int64>(j).ok().map(|i| i.0);
        for j in ["7", "\"7\"", "7.0", "\"7e0\"", "0.7e1", "\"7.0\""] {
            assert_eq!(read(j), Some(7), "{j}");
        }
        assert_eq!(read("\"-9223372036854775808\""), Some(i64::MIN));
        assert_eq!(read("9223372036854775807"), Some(i64::MAX));
        assert_eq!(read("-3"), Some(-3));
        for bad in [
            "\"x\"",
            "1.5",
            "\"1.5\"",
            "9223372036854775808",
            "\"9223372036854775808\"",
            "1e300",
            "\"NaN\"",
            "\"inf\"",
            "true",
            "null",
            "[1]",
            "{}",
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }
}
