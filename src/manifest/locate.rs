//! Where a key or a value stands in a YAML document, so every problem is reported at
//! `file:line:column`.

use std::fmt;

/// Find the line and column of a key path (block-style YAML) in a document. Falls back to
/// the deepest key found, then to line 1. Good enough to point a human at the right line.
pub(crate) fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let mut best = (1, 1);
    let mut depth = 0;
    let mut min_indent: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        if depth >= path.len() {
            break;
        }
        let stripped = line.trim_start();
        let indent = line.len() - stripped.len();
        let stripped_item = stripped.trim_start_matches("- ");
        let item_indent = indent + (stripped.len() - stripped_item.len());
        if let Some(min) = min_indent {
            if !stripped.is_empty() && !stripped.starts_with('#') && indent < min {
                break;
            }
        }
        let key = path[depth];
        if stripped_item.starts_with(&format!("{key}:")) {
            best = (i + 1, item_indent + 1);
            depth += 1;
            min_indent = Some(item_indent + 1);
        }
    }
    best
}

/// The line and column of the `nth` (from 0) value at `path` in a YAML document: `path`
/// names map keys from the document's root, list items are passed through. Exact for
/// block and flow style alike, because the YAML parser itself reports where it stood when
/// the value was reached. `None` if there is no such value.
pub(crate) fn locate_scalar(text: &str, path: &[&str], nth: usize) -> Option<(usize, usize)> {
    use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess};
    use std::cell::Cell;
    const FOUND: &str = "coxswain: value located";

    struct Seek<'a> {
        path: &'a [&'a str],
        left: &'a Cell<usize>,
    }
    impl Seek<'_> {
        /// At the end of the path: stop here if this is the wanted occurrence.
        fn arrive<E: de::Error>(&self) -> Result<(), E> {
            match self.left.get() {
                0 => Err(E::custom(FOUND)),
                n => {
                    self.left.set(n - 1);
                    Ok(())
                }
            }
        }
    }
    impl<'de> DeserializeSeed<'de> for Seek<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    macro_rules! scalar {
        ($($name:ident: $ty:ty),*) => {$(
            fn $name<E: de::Error>(self, _: $ty) -> Result<(), E> {
                if self.path.is_empty() { self.arrive() } else { Ok(()) }
            }
        )*};
    }
    impl<'de> de::Visitor<'de> for Seek<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any YAML value")
        }
        scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            if self.path.is_empty() {
                self.arrive()
            } else {
                Ok(())
            }
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            if self.path.is_empty() {
                self.arrive()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            let (path, left) = (self.path, self.left);
            while seq.next_element_seed(Seek { path, left })?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            if self.path.is_empty() {
                self.arrive()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            while let Some(key) = map.next_key::<serde_yaml::Value>()? {
                match self.path.split_first() {
                    Some((first, rest)) if key.as_str() == Some(*first) => {
                        map.next_value_seed(Seek {
                            path: rest,
                            left: self.left,
                        })?;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    let left = Cell::new(nth);
    match (Seek { path, left: &left }).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}
