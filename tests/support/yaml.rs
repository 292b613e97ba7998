//! A reader for the small YAML subset of the project's Kubernetes manifest, so tests can check
//! its settings without a YAML dependency: block mappings and sequences (a sequence item may
//! open a mapping on its own line), `#` comments, plain and double-quoted scalars, `{}`, and
//! flow sequences of scalars (`["a", "b"]`). Anything else is refused, never guessed.

use serde_json::{Map, Value};

/// The document as JSON values: integers as numbers, `true`/`false` as booleans, the rest
/// as strings.
pub fn parse(text: &str) -> Result<Value, String> {
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter_map(|(n, raw)| Line::read(n + 1, raw))
        .collect();
    if let Some(tab) = text.lines().position(|l| l.starts_with('\t')) {
        return Err(format!("line {}: indented with a tab", tab + 1));
    }
    let mut reader = Reader { lines, at: 0 };
    let Some(first) = reader.lines.first() else {
        return Ok(Value::Null);
    };
    let value = reader.block(first.indent)?;
    match reader.lines.get(reader.at) {
        Some(line) => Err(format!("line {}: unexpected indentation", line.number)),
        None => Ok(value),
    }
}

/// One line with content: its number, indentation and text without the comment.
#[derive(Clone)]
struct Line {
    number: usize,
    indent: usize,
    text: String,
}

impl Line {
    fn read(number: usize, raw: &str) -> Option<Line> {
        let text = strip_comment(raw).trim_end();
        let content = text.trim_start();
        if content.is_empty() || content == "---" {
            return None;
        }
        Some(Line {
            number,
            indent: text.len() - content.len(),
            text: content.to_owned(),
        })
    }
}

/// The line up to a `#` that starts a comment (at the start, or after a blank, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && previous.is_whitespace() => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

struct Reader {
    lines: Vec<Line>,
    at: usize,
}

impl Reader {
    fn block(&mut self, indent: usize) -> Result<Value, String> {
        match self.lines.get(self.at) {
            Some(line) if is_item(&line.text) => self.sequence(indent),
            Some(_) => self.mapping(indent),
            None => Ok(Value::Null),
        }
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, String> {
        let mut map = Map::new();
        while let Some(line) = self.lines.get(self.at).cloned() {
            if line.indent != indent || is_item(&line.text) {
                break;
            }
            let (key, rest) = split_key(&line)?;
            self.at += 1;
            let value = if !rest.is_empty() {
                scalar(rest, line.number)?
            } else {
                match self.lines.get(self.at) {
                    Some(next) if next.indent > indent => self.block(next.indent)?,
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_item(&next.text) => {
                        self.sequence(indent)?
                    }
                    _ => Value::Null,
                }
            };
            if map.insert(key.to_owned(), value).is_some() {
                return Err(format!("line {}: `{key}` appears twice", line.number));
            }
        }
        Ok(Value::Object(map))
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.at).cloned() {
            if line.indent != indent || !is_item(&line.text) {
                break;
            }
            let item = line.text[1..].trim_start();
            if item.is_empty() {
                self.at += 1;
                match self.lines.get(self.at) {
                    Some(next) if next.indent > indent => items.push(self.block(next.indent)?),
                    _ => items.push(Value::Null),
                }
            } else if split_key(&Line {
                text: item.to_owned(),
                ..line.clone()
            })
            .is_ok()
                && !item.starts_with('"')
                && !item.starts_with('[')
            {
                // `- key: value` opens a mapping whose keys line up after the dash.
                let inner = indent + (line.text.len() - item.len());
                self.lines[self.at] = Line {
                    indent: inner,
                    text: item.to_owned(),
                    ..line
                };
                items.push(self.mapping(inner)?);
            } else {
                self.at += 1;
                items.push(scalar(item, line.number)?);
            }
        }
        Ok(Value::Array(items))
    }
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `key: rest` or `key:`.
fn split_key(line: &Line) -> Result<(&str, &str), String> {
    let (key, rest) = match line.text.split_once(": ") {
        Some((key, rest)) => (key, rest.trim()),
        None => match line.text.strip_suffix(':') {
            Some(key) => (key, ""),
            None => return Err(format!("line {}: expected `key: value`", line.number)),
        },
    };
    if key.is_empty() || key.contains(['"', '[', '{', ' ']) {
        return Err(format!("line {}: unsupported key `{key}`", line.number));
    }
    Ok((key, rest))
}

fn scalar(text: &str, number: usize) -> Result<Value, String> {
    if text == "{}" {
        return Ok(Value::Object(Map::new()));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.trim().is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        return inner
            .split(',')
            .map(|item| scalar(item.trim(), number))
            .collect();
    }
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        if inner.contains(['"', '\\']) {
            return Err(format!(
                "line {number}: escapes in strings are not supported"
            ));
        }
        return Ok(Value::String(inner.to_owned()));
    }
    if text.starts_with(['{', '[', '"', '\'', '&', '*', '!', '|', '>']) {
        return Err(format!("line {number}: unsupported YAML `{text}`"));
    }
    Ok(match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(text.to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    #[test]
    fn reads_the_subset_the_manifest_uses() {
        let text = r#"
# a pod
apiVersion: v1
spec:
  securityContext:
    fsGroup: 10001 # the group
  volumes:
    - name: run
      emptyDir: {}
  containers:
    - name: app
      args: ["--max-sessions", "16"]
      command:
      - sleep
      - "infinity"
      securityContext:
        runAsNonRoot: true
"#;
        assert_eq!(
            parse(text).unwrap(),
            json!({
                "apiVersion": "v1",
                "spec": {
                    "securityContext": {"fsGroup": 10001},
                    "volumes": [{"name": "run", "emptyDir": {}}],
                    "containers": [{
                        "name": "app",
                        "args": ["--max-sessions", "16"],
                        "command": ["sleep", "infinity"],
                        "securityContext": {"runAsNonRoot": true}
                    }]
                }
            })
        );
    }

    #[test]
    fn refuses_what_it_does_not_read() {
        assert!(parse("a: 1\na: 2\n").is_err(), "duplicate keys");
        assert!(parse("a: |\n  text\n").is_err(), "block scalars");
        assert!(parse("a: &anchor 1\n").is_err(), "anchors");
        assert!(
            parse("a:\n    b: 1\n  c: 2\n").is_err(),
            "ragged indentation"
        );
    }
}
