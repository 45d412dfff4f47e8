//! Reading a Prometheus/OpenMetrics text exposition, for assertions.

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format. Comment lines (`# TYPE`, `# HELP`, `# EOF`) are skipped;
    /// timestamps and exemplars after the value are ignored.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut samples = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_line(line).map_err(|e| format!("line {}: {e}: {line:?}", number + 1))?);
        }
        Ok(Scrape { samples })
    }

    /// Fetches `http://127.0.0.1:<port>/metrics` and parses it.
    pub async fn fetch(client: &reqwest::Client, port: u16) -> Result<Scrape, String> {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let response = client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let text = response.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        Scrape::parse(&text)
    }

    /// The samples named `name`.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of the samples named `name` whose labels include all of `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|s| matching.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // Skip separators, then read `key="value"` or the closing brace.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || *c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some((start, c)) = chars.next() else { return Err("unterminated labels".into()) };
            if c == '}' {
                break start + 1;
            }
            let mut key = String::from(c);
            loop {
                match chars.next() {
                    Some((_, '=')) => break,
                    Some((_, c)) => key.push(c),
                    None => return Err("unterminated label name".into()),
                }
            }
            if !matches!(chars.next(), Some((_, '"'))) {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            labels.insert(key, value);
        };
        rest = &after[end..];
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("value {v:?} is not a number"))?,
    };
    Ok(Sample { name, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_special_values() {
        let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uo\\\\te\"} 3\ny 2.5 1700000000\nz{le=\"+Inf\"} +Inf\n# EOF\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.samples.len(), 3);
        assert_eq!(s.samples[0].labels["b"], "q\"uo\\te");
        assert_eq!(s.sum("x_total", &[("a", "1")]), 3.0);
        assert_eq!(s.sum("x_total", &[("a", "2")]), 0.0);
        assert_eq!(s.sum("y", &[]), 2.5);
        assert_eq!(s.samples[2].value, f64::INFINITY);
        assert!(Scrape::parse("x{a=\"1\" 3").is_err());
        assert!(Scrape::parse("x{a=\"1\"} three").is_err());
    }
}
