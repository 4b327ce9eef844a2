//! How both forms read their settings: one error type naming the variable,
//! one set of value parsers, and one layering of sources (flags, then the
//! environment, then an optional TOML file, then defaults). The local
//! server's `ServeConfig` and the functions' `CloudConfig` are typed
//! structs read through this module.
//!
//! A configuration file holds the same settings as the environment, each
//! under its variable's name without the `LOTSAWA_` prefix, in lower case
//! (`concurrency = 4` for `LOTSAWA_CONCURRENCY`, `openai_base_url` for
//! `OPENAI_BASE_URL`); lists may be TOML arrays. A variable that is set
//! overrides the file.

use std::collections::BTreeMap;

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    /// The variable, flag or file key.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `name`.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// Where values come from: the process environment, a file, a test's map.
pub trait Source {
    /// The value of variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The process environment (empty values count as unset).
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// The file key of variable `name`.
pub fn file_key(name: &str) -> String {
    name.strip_prefix("LOTSAWA_").unwrap_or(name).to_lowercase()
}

/// The settings of a TOML configuration file, as variable values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSettings {
    values: BTreeMap<String, String>,
}

impl FileSettings {
    /// Parse a file's text; `origin` names it in errors; every key must be
    /// the file key of one of `known` (a misspelt setting is an error, not
    /// a silent default).
    pub fn parse(text: &str, origin: &str, known: &[&str]) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new(origin, e.message().to_owned()))?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            if !known.iter().any(|k| file_key(k) == key) {
                return Err(ConfigError::new(
                    format!("{origin}: {key}"),
                    "not a setting of this program",
                ));
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| match item {
                        toml::Value::String(s) => Ok(s),
                        toml::Value::Integer(n) => Ok(n.to_string()),
                        _ => Err(ConfigError::new(
                            format!("{origin}: {key}"),
                            "a list holds strings or integers",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                _ => {
                    return Err(ConfigError::new(
                        format!("{origin}: {key}"),
                        "expected a string, number, boolean or list",
                    ));
                }
            };
            values.insert(key, text);
        }
        Ok(Self { values })
    }
}

impl Source for FileSettings {
    fn var(&self, name: &str) -> Option<String> {
        self.values.get(&file_key(name)).cloned()
    }
}

/// The environment over a file: a variable that is set wins.
pub struct Layered<'a> {
    /// Read first.
    pub env: &'a dyn Source,
    /// Read when the environment does not set a variable.
    pub file: Option<&'a FileSettings>,
}

impl Source for Layered<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .var(name)
            .or_else(|| self.file.and_then(|f| f.var(name)))
    }
}

/// Parse `raw` as a number in `min..=max`, the error naming `name`.
pub fn parse_num<T>(name: &str, raw: &str, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match raw.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(ConfigError::new(
            name,
            format!("expected an integer between {min} and {max}, got '{raw}'"),
        )),
    }
}

/// Variable `name` as a number in `min..=max`, `None` when unset.
pub fn optional_number<T>(
    src: &dyn Source,
    name: &str,
    min: T,
    max: T,
) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    src.var(name)
        .map(|raw| parse_num(name, &raw, min, max))
        .transpose()
}

/// Variable `name` as a number in `min..=max`, `default` when unset.
pub fn number<T>(src: &dyn Source, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    Ok(optional_number(src, name, min, max)?.unwrap_or(default))
}

/// Variable `name` as a switch: `1`/`true` or `0`/`false` (unset: off).
pub fn flag(src: &dyn Source, name: &str) -> Result<bool, ConfigError> {
    match src.var(name).as_deref().map(str::trim) {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(ConfigError::new(
            name,
            format!("expected 1, true, 0 or false, got '{other}'"),
        )),
    }
}

/// Variable `name`, which must be set and not blank.
pub fn required(src: &dyn Source, name: &str) -> Result<String, ConfigError> {
    src.var(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ConfigError::new(name, "must be set"))
}

/// Variable `name` as a comma-separated list, blanks dropped.
pub fn list(src: &dyn Source, name: &str) -> Vec<String> {
    src.var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "LOTSAWA_CONCURRENCY",
        "LOTSAWA_ALLOWED_HOSTS",
        "LOTSAWA_REQUIRE_AUTH",
        "OPENAI_BASE_URL",
    ];

    #[test]
    fn a_file_holds_the_variables_under_their_short_names() {
        let file = FileSettings::parse(
            "concurrency = 4\nallowed_hosts = [\"a.example\", \"b.example\"]\n\
             require_auth = true\nopenai_base_url = \"http://127.0.0.1:9/v1\"\n",
            "lotsawa.toml",
            KNOWN,
        )
        .expect("parses");
        assert_eq!(file.var("LOTSAWA_CONCURRENCY").as_deref(), Some("4"));
        assert_eq!(
            list(&file, "LOTSAWA_ALLOWED_HOSTS"),
            ["a.example", "b.example"]
        );
        assert!(flag(&file, "LOTSAWA_REQUIRE_AUTH").expect("switch"));
        assert_eq!(
            file.var("OPENAI_BASE_URL").as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let file = FileSettings::parse("concurrency = 4\n", "f.toml", KNOWN).expect("parses");
        let env = |name: &str| (name == "LOTSAWA_CONCURRENCY").then(|| "7".to_owned());
        let layered = Layered {
            env: &env,
            file: Some(&file),
        };
        assert_eq!(number(&layered, "LOTSAWA_CONCURRENCY", 3u32, 1, 256), Ok(7));
        let nothing = |_: &str| None;
        let layered = Layered {
            env: &nothing,
            file: Some(&file),
        };
        assert_eq!(number(&layered, "LOTSAWA_CONCURRENCY", 3u32, 1, 256), Ok(4));
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let err = FileSettings::parse("concurency = 4\n", "f.toml", KNOWN).expect_err("typo");
        assert_eq!(err.name, "f.toml: concurency");
        let err = FileSettings::parse("concurrency = \n", "f.toml", KNOWN).expect_err("syntax");
        assert_eq!(err.name, "f.toml");
        let err =
            FileSettings::parse("[concurrency]\nx = 1\n", "f.toml", KNOWN).expect_err("a table");
        assert_eq!(err.name, "f.toml: concurrency");
        let file =
            FileSettings::parse("concurrency = \"many\"\n", "f.toml", KNOWN).expect("parses");
        let err = number(&file, "LOTSAWA_CONCURRENCY", 3u32, 1, 256).expect_err("not a number");
        assert_eq!(err.name, "LOTSAWA_CONCURRENCY");
        assert!(err.message.contains("'many'"), "{}", err.message);
        let on = |_: &str| Some("maybe".to_owned());
        assert_eq!(flag(&on, "X").expect_err("bad switch").name, "X");
        let off = |_: &str| Some("  ".to_owned());
        assert_eq!(required(&off, "Y").expect_err("blank").name, "Y");
    }
}
