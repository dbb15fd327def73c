//! Task data from local files in each data set's published format: JSON Lines (GSM8K, ARC,
//! HellaSwag, LAMBADA, and any Hub split exported with `to_json`), MMLU's CSV files, WikiText-2's
//! raw text. Every error names the file and the line.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

fn format_error(path: &Path, line: usize, reason: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        reason: format!("line {line}: {reason}"),
    }
}

/// Reads a JSON Lines file: one object per non-empty line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| format_error(path, i + 1, e))?;
        if !value.is_object() {
            return Err(format_error(path, i + 1, "expected a JSON object"));
        }
        rows.push(value);
    }
    if rows.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: "no records".into(),
        });
    }
    Ok(rows)
}

/// A string field of a record.
pub fn field<'a>(path: &Path, line: usize, row: &'a Value, name: &str) -> Result<&'a str> {
    row.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format_error(path, line, format!("missing string field '{name}'")))
}

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, newlines inside quotes). Returns rows
/// with the line each starts on.
pub fn read_csv(path: &Path) -> Result<Vec<(usize, Vec<String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field_text = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field_text.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field_text.push(c);
                }
                _ => field_text.push(c),
            }
            continue;
        }
        match c {
            '"' if field_text.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field_text)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field_text));
                rows.push((row_line, std::mem::take(&mut row)));
                line += 1;
                row_line = line;
                any = false;
            }
            _ => field_text.push(c),
        }
    }
    if quoted {
        return Err(format_error(path, row_line, "unterminated quoted field"));
    }
    if any {
        row.push(field_text);
        rows.push((row_line, row));
    }
    Ok(rows)
}

/// The documents of WikiText's raw files (`wiki.test.raw`), as the document-level dataset the
/// harness uses splits them: a document starts at each top-level heading line ` = Title = `.
/// A JSON Lines file of `{"page": ...}` records is accepted too.
pub fn read_wikitext(path: &Path) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        let rows = read_jsonl(path)?;
        return rows
            .iter()
            .enumerate()
            .map(|(i, r)| field(path, i + 1, r, "page").map(str::to_string))
            .collect();
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut docs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end_matches('\n');
        let top_heading =
            trimmed.starts_with(" = ") && trimmed.ends_with(" = ") && !trimmed.starts_with(" = = ");
        if top_heading && !current.trim().is_empty() {
            docs.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        docs.push(current);
    }
    if docs.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: "no text".into(),
        });
    }
    Ok(docs)
}

/// The first existing path among `candidates` under `dir`, or an error listing them.
pub fn find(dir: &Path, task: &str, candidates: &[&str]) -> Result<PathBuf> {
    for c in candidates {
        let p = dir.join(c);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::InvalidArgument(format!(
        "task {task}: no data file under {} (looked for {})",
        dir.display(),
        candidates.join(", ")
    )))
}

/// Picks `limit` of `n` items: the first `limit` (as the harness' `--limit`), or a seeded random
/// subset in the original order when `seed` is given.
pub fn select(n: usize, limit: Option<usize>, seed: Option<u64>) -> Vec<usize> {
    let limit = limit.unwrap_or(n).min(n);
    match seed {
        None => (0..limit).collect(),
        Some(seed) => {
            let mut rng = super::pyrandom::PyRandom::new(seed);
            let mut chosen = rng.sample_indices(n, limit);
            chosen.sort_unstable();
            chosen
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("lowbit-data-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_with_quotes_and_newlines() {
        let p = temp(
            "a.csv",
            "q1,\"a, b\",\"say \"\"hi\"\"\nthere\",A\nq2,x,y,B\n",
        );
        let rows = read_csv(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1, vec!["q1", "a, b", "say \"hi\"\nthere", "A"]);
        assert_eq!(rows[1].0, 3);
        let bad = temp("b.csv", "q,\"open\n");
        assert!(read_csv(&bad).unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let p = temp("c.jsonl", "{\"a\": 1}\n\n{oops}\n");
        let err = read_jsonl(&p).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        let empty = temp("d.jsonl", "\n");
        assert!(read_jsonl(&empty).is_err());
    }

    #[test]
    fn wikitext_documents_split_at_top_headings() {
        let p = temp(
            "w.raw",
            " \n = One = \n \n Text one . \n = = Sub = = \n more \n = Two = \n two \n",
        );
        let docs = read_wikitext(&p).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].contains("= = Sub = ="));
        assert!(docs[1].starts_with(" = Two = "));
    }

    #[test]
    fn selection() {
        assert_eq!(select(10, Some(3), None), vec![0, 1, 2]);
        let s = select(100, Some(5), Some(1));
        assert_eq!(s.len(), 5);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
