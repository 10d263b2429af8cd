//! The one way a label enum (a closed set of values written as fixed strings
//! in `/stats` JSON, `/metrics` and logs) gets its traits: compared, hashed,
//! ordered and written as its label, read from it, with a label this version
//! does not know read as the type's `Unknown` variant (forward compatibility:
//! a newer peer's document still parses). Ordering by label keeps a
//! `BTreeMap` keyed by the enum in the order of its JSON keys, and
//! `Borrow<str>` lets such a map be indexed by the label (`requests["grpc"]`).

/// Implements `Hash`, `Ord`, `Borrow<str>`, `Display`, `Serialize` and
/// `Deserialize` for `$t` from its `fn as_str(&self) -> &'static str` and
/// `fn from_label(&str) -> Self`. The type derives `PartialEq` and `Eq`
/// itself; its labels must be distinct (so equality is label equality).
macro_rules! label_traits {
    ($t:ty, $expecting:literal) => {
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $t {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        Ok(<$t>::from_label(v))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

pub(crate) use label_traits;
