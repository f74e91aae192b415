//! The sample lines of the Prometheus text exposition format, as the API server's
//! `/metrics` serves it. Hand-written on purpose: the webhook needs a few gauges and
//! counters of one family by name and labels, and the crates that parse the format pull
//! in a regex engine and a date library for it. Comments, HELP and TYPE lines are
//! skipped; a malformed sample line is an error naming its line number.

use std::collections::BTreeMap;

/// One sample: the metric's name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A line that is not a sample: its number (from 1) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// The samples of `text` whose name starts with `prefix`, in order.
pub fn samples(text: &str, prefix: &str) -> Result<Vec<Sample>, SyntaxError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        out.push(sample(line).map_err(|message| SyntaxError {
            line: i + 1,
            message,
        })?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a sample needs a value after its name")?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(after_brace)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp in milliseconds.
    let value = rest
        .split_whitespace()
        .next()
        .ok_or("a sample needs a value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse::<f64>()
            .map_err(|_| format!("{other:?} is not a number"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// `name="value",…}` (after the opening brace); returns the labels and what follows the
/// closing brace.
fn label_set(mut text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or("a label needs `=`")?;
        let key = text[..eq].trim().to_owned();
        let quoted = text[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let (value, after) = quoted_value(quoted)?;
        labels.insert(key, value);
        text = after.trim_start();
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

/// A label value up to its closing quote, with `\\`, `\"` and `\n` unescaped.
fn quoted_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("a label value is not closed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_values_and_skips_the_rest() {
        let text = "# HELP x_total Some help.\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"uote\"} 42\n\
                    x_seconds_bucket{le=\"+Inf\"} +Inf 1700000000000\n\
                    y_total 3\nx_plain 1.5e3\n";
        let got = samples(text, "x_").expect("valid");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name, "x_total");
        assert_eq!(got[0].label("b"), Some("q\"uote"));
        assert_eq!(got[0].value, 42.0);
        assert_eq!(got[1].value, f64::INFINITY);
        assert_eq!(got[2].value, 1500.0);
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = samples("ok 1\nbad{a=1} 2\n", "").expect_err("unquoted label");
        assert_eq!(error.line, 2);
        assert!(error.message.contains("quoted"), "{error}");
        assert!(samples("x{a=\"1\"\n", "").is_err(), "unclosed");
        assert!(samples("x one\n", "").is_err(), "not a number");
    }
}
