//! Time zones of schedules: IANA names, refused with a suggestion when misspelled.

use chrono_tz::Tz;

/// The IANA zone named `name`, or a sentence saying how to write one.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        match chrono_tz::TZ_VARIANTS
            .iter()
            .find(|z| z.name().eq_ignore_ascii_case(name.trim()))
        {
            Some(z) => format!(
                "unknown time zone '{name}': did you mean {}? (zone names are case-sensitive)",
                z.name()
            ),
            None => format!(
                "unknown time zone '{name}': use an IANA name such as Europe/Paris, America/New_York or UTC"
            ),
        }
    })
}

/// Serde for an optional `timezone:` field. A bad name is refused in the scalar's visitor,
/// so that it is reported at the value's own line and column.
pub mod zone_field {
    use chrono_tz::Tz;
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(zone: &Option<Tz>, s: S) -> Result<S::Ok, S::Error> {
        match zone {
            Some(z) => s.serialize_some(z.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tz>, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Tz;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IANA time zone name such as Europe/Paris")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tz, E> {
                super::parse_zone(v).map_err(E::custom)
            }
        }
        struct Maybe;
        impl<'de> Visitor<'de> for Maybe {
            type Value = Option<Tz>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IANA time zone name such as Europe/Paris")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                d.deserialize_str(Name).map(Some)
            }
        }
        d.deserialize_option(Maybe)
    }
}
