//! Integers in request bodies as JSON Schema reads them: `5` and `5.0` are the same
//! integer (its `integer` type means a number with no fractional part), so a client that
//! writes whole numbers as floats is not refused. Fractions, floats beyond 2^53 (where they
//! stop being exact) and values out of the field's range still are. For `#[serde(deserialize_with = "…")]`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// A whole number of type `T`, written as a JSON integer or as a float with no fraction.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    deserializer.deserialize_any(Whole(PhantomData))
}

/// [`whole`] for an optional field (`null` or absent is `None`; pair with `#[serde(default)]`).
pub fn optional_whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    deserializer.deserialize_option(OptionalWhole(PhantomData))
}

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<i64> + TryFrom<u64>> Visitor<'_> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer in range")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Beyond 2^53 a float no longer names one integer (-2^63 - 1 reads as -2^63), so
        // only floats within it count as integers.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > EXACT {
            return Err(E::invalid_value(de::Unexpected::Float(v), &self));
        }
        if v < 0.0 {
            self.visit_i64(v as i64)
        } else {
            self.visit_u64(v as u64)
        }
    }
}

struct OptionalWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for OptionalWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer in range, or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        whole(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::whole")]
        count: u32,
        #[serde(default, deserialize_with = "super::optional_whole")]
        at: Option<i64>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        assert_eq!(
            parse(r#"{"count": 5.0, "at": -3.0}"#).unwrap(),
            Body {
                count: 5,
                at: Some(-3)
            }
        );
        assert_eq!(
            parse(r#"{"count": 5, "at": null}"#).unwrap(),
            Body { count: 5, at: None }
        );
        assert_eq!(parse(r#"{"count": 7}"#).unwrap().at, None);
        for bad in [
            r#"{"count": 5.5}"#,
            r#"{"count": -1}"#,
            r#"{"count": 4294967296}"#,
            r#"{"count": 1e300}"#,
            r#"{"count": "5"}"#,
            r#"{"count": 1, "at": 1e19}"#,
            r#"{"count": 1, "at": -9223372036854775809}"#,
            r#"{"count": 1, "at": 0.5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
