//! The one target-pattern type: which `KIND:SCOPE/NAME` targets a list
//! admits. The executors' allowlist (what may be acted on at all) and the
//! policy's auto-approval list (what may be acted on without a human) are both
//! an [`Allowlist`], so a pattern means the same thing wherever it is written.

use std::fmt;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

/// A glob over targets: `*` matches any run of characters, `/` included
/// (`kubernetes:*/checkout`, `ecs:prod/*`); `?` one character; `[ab]` a class.
/// Checked when parsed, so a malformed pattern is an error at start-up.
#[derive(Clone)]
pub struct TargetPattern {
    text: String,
    matcher: GlobMatcher,
}

impl TargetPattern {
    pub fn new(text: &str) -> Result<TargetPattern, String> {
        if text.trim().is_empty() {
            return Err("a target pattern must not be empty".to_owned());
        }
        let glob = Glob::new(text).map_err(|e| format!("target pattern `{text}`: {e}"))?;
        Ok(TargetPattern { text: text.to_owned(), matcher: glob.compile_matcher() })
    }

    pub fn matches(&self, target: &str) -> bool {
        self.matcher.is_match(target)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for TargetPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Debug for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for TargetPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        TargetPattern::new(&s)
    }
}

impl From<TargetPattern> for String {
    fn from(p: TargetPattern) -> String {
        p.text
    }
}

impl Serialize for TargetPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TargetPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        TargetPattern::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Targets admitted by any of its patterns. Empty admits nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Allowlist(pub Vec<TargetPattern>);

impl Allowlist {
    /// Parses every pattern; the first malformed one is the error.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Allowlist, String> {
        patterns.iter().map(|p| TargetPattern::new(p.as_ref())).collect::<Result<_, _>>().map(Allowlist)
    }

    /// The pattern that admits `target`, if any.
    pub fn admitting(&self, target: &str) -> Option<&TargetPattern> {
        self.0.iter().find(|p| p.matches(target))
    }

    pub fn admits(&self, target: &str) -> bool {
        self.admitting(target).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, pattern: TargetPattern) {
        self.0.push(pattern);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_targets() {
        let cases = [
            ("kubernetes:prod/*", "kubernetes:prod/checkout", true),
            ("kubernetes:prod/*", "kubernetes:staging/checkout", false),
            ("kubernetes:*/checkout", "kubernetes:shop/checkout", true),
            ("*", "ecs:prod/api", true),
            ("ecs:prod/api", "ecs:prod/api", true),
            ("ecs:prod/api", "ecs:prod/api2", false),
            ("ec2:us-east-1/i-*", "ec2:us-east-1/i-0abc", true),
            ("kubernetes:node/ip-?-*", "kubernetes:node/ip-1-2", true),
            ("", "", false),
        ];
        for (pattern, target, want) in cases {
            let got = Allowlist::parse(&[pattern]).map(|a| a.admits(target)).unwrap_or(false);
            assert_eq!(got, want, "{pattern} vs {target}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused_when_read() {
        assert!(Allowlist::parse(&["ecs:prod/[a"]).unwrap_err().contains("ecs:prod/[a"));
        assert!(Allowlist::parse(&["  "]).is_err());
        let err = serde_json::from_str::<Allowlist>(r#"["ok:*/x", "bad:[/"]"#).unwrap_err();
        assert!(err.to_string().contains("bad:[/"), "{err}");
        let list: Allowlist = serde_json::from_str(r#"["ecs:prod/*"]"#).unwrap();
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"["ecs:prod/*"]"#);
        assert!(Allowlist::default().is_empty() && !Allowlist::default().admits("ecs:prod/a"));
    }
}
