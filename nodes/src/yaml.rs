//! YAML files a team writes (runbooks, the configuration), read with
//! positions: every error, whether serde's or a check made after reading,
//! names `FILE:LINE:COLUMN`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A problem at a place in a file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct Error {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Reads `text` (from `file`) as a `T`.
pub fn from_str<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Error> {
    if text.trim().is_empty() {
        return Err(Error { file: file.to_owned(), line: 1, column: 1, message: "the file is empty".into() });
    }
    serde_saphyr::from_str(text).map_err(|e| {
        let e = e.without_snippet();
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let text = e.to_string();
        let message = text.strip_suffix(&format!(" at line {line}, column {column}")).unwrap_or(&text).to_owned();
        Error { file: file.to_owned(), line, column, message }
    })
}

/// An error about the value at `path` (`steps[1].action.target`, `services[0]`)
/// in `text`: placed at that value, or at the nearest enclosing one that exists.
pub fn error_at(file: &Path, text: &str, path: &str, message: impl Into<String>) -> Error {
    let (line, column) = locate(text, path).unwrap_or((1, 1));
    Error { file: file.to_owned(), line, column, message: message.into() }
}

/// Line and column of the value at `path` in `text`.
pub fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    let root: Spanned<Tree> = serde_saphyr::from_str(text).ok()?;
    let mut at = &root;
    for segment in segments(path) {
        let next = match (&at.value, segment) {
            (Tree::Map(entries), Segment::Key(k)) => entries.iter().find(|(name, _)| name == k).map(|(_, v)| v),
            (Tree::Seq(items), Segment::Index(i)) => items.get(i),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    Some((at.referenced.line(), at.referenced.column()))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for index in indexes.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

/// The shape of a YAML document with the position of every value.
enum Tree {
    Map(Vec<(String, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Key>()? {
                    entries.push((key.0, map.next_value()?));
                }
                Ok(Tree::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tree::Seq(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
            fn visit_none<E>(self) -> Result<Tree, E> {
                Ok(Tree::Scalar)
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping key of any scalar type, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "services:\n  - name: a\n    depends_on: [b, c]\n  - name: b\n    depends_on:\n      - x\n";

    #[test]
    fn a_path_is_placed_at_its_value() {
        assert_eq!(locate(TEXT, "services[0].depends_on[1]"), Some((3, 21)));
        assert_eq!(locate(TEXT, "services[1].depends_on[0]"), Some((6, 9)));
        assert_eq!(locate(TEXT, "services[1].name"), Some((4, 11)));
        // A value that is absent: the nearest enclosing one.
        assert_eq!(locate(TEXT, "services[1].runs_on.ec2"), Some((4, 5)));
    }

    #[test]
    fn serde_errors_carry_the_file_and_position() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            name: String,
        }
        let err = from_str::<S>(Path::new("x.yaml"), "name: a\nnmae: b\n").unwrap_err();
        assert_eq!(err.to_string(), "x.yaml:2:1: unknown field `nmae`, expected one of name");
        let err = from_str::<S>(Path::new("x.yaml"), "\n").unwrap_err();
        assert_eq!(err.to_string(), "x.yaml:1:1: the file is empty");
    }
}
