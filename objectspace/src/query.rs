//! The search language of `p3ctl search` and `p3ctl take --match`.
//!
//! A query is one or more conditions joined by `and`:
//!
//! ```text
//! type = matrix-row and meta.row >= 10 and meta.row < 20 and name ~ "rows/*"
//! ```
//!
//! | field | operators | meaning |
//! |---|---|---|
//! | `name` | `=` `!=` `~` | the object name; `~` is a glob (`*`, `?`) |
//! | `type` | `=` `!=` `~` | the type tag |
//! | `size` | `=` `!=` `<` `<=` `>` `>=` | the value's size in bytes |
//! | `meta.KEY` | all | numbers compare as numbers; text with `=`, `!=`, `~` |
//! | `content` | `~` | the value contains the text (values up to [`CONTENT_MAX`] bytes) |
//!
//! Values are numbers, bare words, or `"quoted text"` (with `\"` and `\\`).
//! `*` alone matches every object.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::{
    error::{Result, SpaceError},
    object::{MetaValue, Metadata},
};

/// Values up to this size are searchable by content.
pub const CONTENT_MAX: u64 = 4096;

/// What a query is checked against: an object's searchable summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Searchable {
    /// Object name.
    pub name: String,
    /// Type tag.
    pub type_tag: String,
    /// Size in bytes.
    pub size: u64,
    /// Metadata.
    pub meta: Metadata,
    /// The value, if small enough.
    #[serde(with = "serde_bytes")]
    pub content: Option<Vec<u8>>,
}

impl Searchable {
    /// What an index keeps of this summary to find it by: its type and each
    /// metadata value.
    pub fn terms(&self) -> Vec<Term> {
        let meta = self.meta.iter().map(|(key, value)| match value {
            MetaValue::Num(x) => Term::MetaNum(key.clone(), *x),
            MetaValue::Str(s) => Term::MetaText(key.clone(), s.clone()),
        });
        std::iter::once(Term::Type(self.type_tag.clone()))
            .chain(meta)
            .collect()
    }
}

/// One thing an index finds summaries by.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// The type tag.
    Type(String),
    /// A metadata field holding text.
    MetaText(String, String),
    /// A metadata field holding a number.
    MetaNum(String, f64),
}

/// Where a shard owner looks for a query's candidates. Whatever the plan,
/// each candidate is checked against the whole query, so a plan only has to
/// reach every summary that matches (it may reach more).
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Every row of the shard.
    Scan,
    /// The rows whose names start with this.
    NamePrefix(String),
    /// The rows that have any of these terms.
    Terms(Vec<Term>),
    /// The rows whose metadata field `key` holds a number within the bounds.
    Range {
        /// The metadata field.
        key: String,
        /// The lower bound.
        low: Bound<f64>,
        /// The upper bound.
        high: Bound<f64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Name,
    Type,
    Size,
    Content,
    Meta(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    field: Field,
    op: Op,
    value: Value,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    all: Vec<Condition>,
    /// The text it was parsed from: what a search sends to shard owners.
    text: String,
}

fn bad(text: &str, why: &str) -> SpaceError {
    SpaceError::Invalid(format!("invalid query {text:?}: {why}"))
}

/// Splits into words, operators and quoted strings.
fn tokens(text: &str) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => {
                        s.push(chars.next().ok_or_else(|| bad(text, "unfinished escape"))?)
                    }
                    Some(c) => s.push(c),
                    None => return Err(bad(text, "unterminated quote")),
                }
            }
            out.push((s, true));
        } else if "=!<>~".contains(c) {
            let mut op = String::from(c);
            chars.next();
            if chars.peek() == Some(&'=') {
                op.push('=');
                chars.next();
            }
            out.push((op, false));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || "=!<>~\"".contains(c) {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push((s, false));
        }
    }
    Ok(out)
}

impl Query {
    /// Parses a query (see the module documentation).
    pub fn parse(text: &str) -> Result<Self> {
        let tokens = tokens(text)?;
        if tokens.len() == 1 && tokens[0] == ("*".to_owned(), false) {
            return Ok(Query {
                all: Vec::new(),
                text: text.to_owned(),
            });
        }
        let mut all = Vec::new();
        for (i, group) in tokens
            .split(|(t, q)| !q && t.eq_ignore_ascii_case("and"))
            .enumerate()
        {
            let [(field, false), (op, false), (value, quoted)] = group else {
                return Err(bad(
                    text,
                    &format!("condition {} is not FIELD OP VALUE", i + 1),
                ));
            };
            let field = match field.as_str() {
                "name" => Field::Name,
                "type" => Field::Type,
                "size" => Field::Size,
                "content" => Field::Content,
                f => match f.strip_prefix("meta.") {
                    Some(key) if !key.is_empty() => Field::Meta(key.to_owned()),
                    _ => {
                        return Err(bad(
                            text,
                            &format!("unknown field {f:?} (name, type, size, content, meta.KEY)"),
                        ))
                    }
                },
            };
            let op = match op.as_str() {
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "~" => Op::Like,
                o => return Err(bad(text, &format!("unknown operator {o:?}"))),
            };
            let value = match value.parse::<f64>() {
                Ok(n) if !quoted && n.is_finite() => Value::Num(n),
                _ => Value::Text(value.clone()),
            };
            let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
            let valid = match (&field, op, &value) {
                (Field::Content, Op::Like, _) => true,
                (Field::Content, _, _) => false,
                (Field::Size, Op::Like, _) | (Field::Size, _, Value::Text(_)) => false,
                (Field::Name | Field::Type, _, _) => !ordering,
                (Field::Meta(_), _, Value::Text(_)) => !ordering,
                _ => true,
            };
            if !valid {
                return Err(bad(
                    text,
                    &format!("{op:?} does not apply to {field:?} with {value:?}"),
                ));
            }
            all.push(Condition { field, op, value });
        }
        Ok(Query {
            all,
            text: text.to_owned(),
        })
    }

    /// The text the query was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `object` satisfies every condition.
    pub fn matches(&self, object: &Searchable) -> bool {
        self.all.iter().all(|c| c.matches(object))
    }

    /// How to find this query's candidates: through the one condition that
    /// narrows them most by its kind (an equality on metadata, then on the
    /// name or a name prefix, then a metadata range bounded on both sides,
    /// then an equality on the type, then a range bounded on one side);
    /// every row when no condition can be looked up.
    pub fn plan(&self) -> Plan {
        let text = |value: &Value| match value {
            Value::Text(v) => v.clone(),
            Value::Num(n) => n.to_string(),
        };
        let mut best: Option<(u8, Plan)> = None;
        let mut consider = |rank: u8, plan: Plan| {
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, plan));
            }
        };
        for c in &self.all {
            match (&c.field, c.op, &c.value) {
                // A number also equals the text that spells it.
                (Field::Meta(key), Op::Eq, Value::Num(n)) => consider(
                    0,
                    Plan::Terms(vec![
                        Term::MetaNum(key.clone(), *n),
                        Term::MetaText(key.clone(), n.to_string()),
                    ]),
                ),
                (Field::Meta(key), Op::Eq, Value::Text(v)) => {
                    consider(0, Plan::Terms(vec![Term::MetaText(key.clone(), v.clone())]))
                }
                (Field::Name, Op::Eq, v) => consider(1, Plan::NamePrefix(text(v))),
                (Field::Name, Op::Like, Value::Text(pattern)) => {
                    let literal: String = pattern
                        .chars()
                        .take_while(|c| *c != '*' && *c != '?')
                        .collect();
                    if !literal.is_empty() {
                        consider(1, Plan::NamePrefix(literal));
                    }
                }
                (Field::Type, Op::Eq, v) => consider(3, Plan::Terms(vec![Term::Type(text(v))])),
                (Field::Meta(key), Op::Lt | Op::Le | Op::Gt | Op::Ge, Value::Num(_)) => {
                    let (low, high) = self.bounds(key);
                    let both =
                        !matches!(low, Bound::Unbounded) && !matches!(high, Bound::Unbounded);
                    let plan = Plan::Range {
                        key: key.clone(),
                        low,
                        high,
                    };
                    consider(if both { 2 } else { 4 }, plan);
                }
                _ => {}
            }
        }
        best.map_or(Plan::Scan, |(_, plan)| plan)
    }

    /// The tightest bounds the query's conditions put on the number in
    /// metadata field `key`.
    fn bounds(&self, key: &str) -> (Bound<f64>, Bound<f64>) {
        let (mut low, mut high) = (Bound::Unbounded, Bound::Unbounded);
        let value = |b: &Bound<f64>| match b {
            Bound::Included(x) | Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        for c in &self.all {
            let (Field::Meta(k), Value::Num(n)) = (&c.field, &c.value) else {
                continue;
            };
            if k != key {
                continue;
            }
            let n = *n;
            match c.op {
                Op::Gt | Op::Ge if value(&low).is_none_or(|l| n > l) => {
                    low = if c.op == Op::Gt {
                        Bound::Excluded(n)
                    } else {
                        Bound::Included(n)
                    };
                }
                Op::Lt | Op::Le if value(&high).is_none_or(|h| n < h) => {
                    high = if c.op == Op::Lt {
                        Bound::Excluded(n)
                    } else {
                        Bound::Included(n)
                    };
                }
                _ => {}
            }
        }
        (low, high)
    }

    /// Whether a condition looks at the value, so a summary without it
    /// cannot be matched.
    pub fn uses_content(&self) -> bool {
        self.all.iter().any(|c| c.field == Field::Content)
    }
}

impl Condition {
    fn matches(&self, o: &Searchable) -> bool {
        let text = |s: &str| match (&self.value, self.op) {
            (Value::Text(v), Op::Eq) => s == v,
            (Value::Text(v), Op::Ne) => s != v,
            (Value::Text(v), Op::Like) => glob(v, s),
            (Value::Num(n), Op::Eq) => s == n.to_string(),
            (Value::Num(n), Op::Ne) => s != n.to_string(),
            _ => false,
        };
        let number = |x: f64| match (&self.value, self.op) {
            (Value::Num(n), Op::Eq) => x == *n,
            (Value::Num(n), Op::Ne) => x != *n,
            (Value::Num(n), Op::Lt) => x < *n,
            (Value::Num(n), Op::Le) => x <= *n,
            (Value::Num(n), Op::Gt) => x > *n,
            (Value::Num(n), Op::Ge) => x >= *n,
            _ => false,
        };
        match &self.field {
            Field::Name => text(&o.name),
            Field::Type => text(&o.type_tag),
            Field::Size => number(o.size as f64),
            Field::Content => match (&o.content, &self.value) {
                (Some(bytes), Value::Text(v)) => contains(bytes, v.as_bytes()),
                (Some(bytes), Value::Num(n)) => contains(bytes, n.to_string().as_bytes()),
                _ => false,
            },
            Field::Meta(key) => match o.meta.get(key) {
                Some(MetaValue::Num(x)) => number(*x),
                Some(MetaValue::Str(s)) => text(s),
                None => self.op == Op::Ne,
            },
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Glob match with `*` (any run) and `?` (one character).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Searchable {
        let mut meta = Metadata::new();
        meta.insert("row".into(), MetaValue::Num(12.0));
        meta.insert("owner".into(), MetaValue::Str("alice".into()));
        Searchable {
            name: "rows/0012".into(),
            type_tag: "matrix-row".into(),
            size: 800,
            meta,
            content: Some(b"hello world".to_vec()),
        }
    }

    fn q(text: &str) -> bool {
        Query::parse(text).unwrap().matches(&object())
    }

    #[test]
    fn conditions_combine_with_and() {
        assert!(q("type = matrix-row and meta.row >= 10 and meta.row < 20"));
        assert!(!q("type = matrix-row and meta.row > 12"));
        assert!(q(
            r#"name ~ "rows/*" and size <= 800 and meta.owner != bob"#
        ));
        assert!(q("meta.owner ~ al*"));
        assert!(q(r#"content ~ "lo wo""#));
        assert!(!q("content ~ bye"));
        assert!(q("meta.missing != 3"));
        assert!(!q("meta.missing = 3"));
        assert!(q("*"));
        assert!(q("name ~ rows/00?2"));
    }

    #[test]
    fn bad_queries_are_explained() {
        for text in [
            "type",
            "type = ",
            "size ~ 3",
            "name < b",
            "colour = red",
            "size = \"3\"",
            "a = b and",
            "type = \"x",
        ] {
            let err = Query::parse(text).unwrap_err().to_string();
            assert!(err.starts_with("invalid query"), "{text}: {err}");
        }
    }

    #[test]
    fn plans_look_up_the_narrowest_condition_and_reach_every_match() {
        use std::ops::{
            Bound::{Excluded, Included, Unbounded},
            RangeBounds,
        };
        let plan = |text: &str| Query::parse(text).unwrap().plan();
        assert_eq!(plan("*"), Plan::Scan);
        assert_eq!(plan("meta.n != 3 and size > 4 and content ~ x"), Plan::Scan);
        assert_eq!(
            plan("type = a and meta.n < 5 and meta.owner = alice"),
            Plan::Terms(vec![Term::MetaText("owner".into(), "alice".into())])
        );
        // A number equals the text that spells it too.
        assert_eq!(
            plan("meta.n = 3"),
            Plan::Terms(vec![
                Term::MetaNum("n".into(), 3.0),
                Term::MetaText("n".into(), "3".into())
            ])
        );
        assert_eq!(
            plan(r#"name ~ "rows/00?2""#),
            Plan::NamePrefix("rows/00".into())
        );
        assert_eq!(
            plan("name ~ *x and type = t"),
            Plan::Terms(vec![Term::Type("t".into())])
        );
        assert_eq!(
            plan("meta.n > 3 and meta.n >= 5 and meta.n < 9 and meta.n <= 20"),
            Plan::Range {
                key: "n".into(),
                low: Included(5.0),
                high: Excluded(9.0)
            }
        );
        assert_eq!(
            plan("type = a and meta.n < 5"),
            Plan::Terms(vec![Term::Type("a".into())]),
            "a range open on one side reaches more than a type, usually"
        );
        assert_eq!(
            plan("meta.n <= 5"),
            Plan::Range {
                key: "n".into(),
                low: Unbounded,
                high: Included(5.0)
            }
        );

        // Every plan reaches the object the query matches.
        let o = object();
        let terms = o.terms();
        for text in [
            "meta.row = 12",
            "meta.owner = alice",
            "type = matrix-row and meta.row > 11",
            r#"name ~ "rows/*""#,
            "name = rows/0012",
            "meta.row >= 12 and meta.row <= 12",
        ] {
            let query = Query::parse(text).unwrap();
            assert!(query.matches(&o), "{text}");
            let reached = match query.plan() {
                Plan::Scan => true,
                Plan::NamePrefix(p) => o.name.starts_with(&p),
                Plan::Terms(wanted) => wanted.iter().any(|t| terms.contains(t)),
                Plan::Range { key, low, high } => terms.iter().any(
                    |t| matches!(t, Term::MetaNum(k, x) if *k == key && (low, high).contains(x)),
                ),
            };
            assert!(reached, "{text}: plan misses the object");
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abbb"));
        assert!(glob("*.txt", "notes.txt"));
        assert!(!glob("?", "ab"));
    }
}
