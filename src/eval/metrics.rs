//! Metrics as lm-evaluation-harness defines them.
//!
//! - `mean` with `stderr = sample_stddev / sqrt(n)` (ddof 1) for accuracy-like metrics;
//! - `word_perplexity = exp(-sum(loglikelihood) / sum(words))`, `byte_perplexity` the same over
//!   UTF-8 bytes, `bits_per_byte = -sum(loglikelihood) / sum(bytes) / ln 2`;
//! - `perplexity` (LAMBADA) `= exp(-mean(loglikelihood))`;
//! - GSM8K: a regex filter extracting the answer (Python `re.findall` semantics), then
//!   `exact_match` after removing the task's ignore-patterns and lower-casing.

use regex::Regex;

/// Mean and its standard error (`None` for fewer than two values).
pub fn mean_stderr(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, None);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, None);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, Some((var / n as f64).sqrt()))
}

/// `exp(-sum(ll) / sum(weights))`: word and byte perplexity.
pub fn weighted_perplexity(items: &[(f64, usize)]) -> f64 {
    let (ll, w) = items
        .iter()
        .fold((0.0, 0usize), |(a, b), &(l, n)| (a + l, b + n));
    (-ll / w as f64).exp()
}

/// `-sum(ll) / sum(bytes) / ln 2`.
pub fn bits_per_byte(items: &[(f64, usize)]) -> f64 {
    let (ll, w) = items
        .iter()
        .fold((0.0, 0usize), |(a, b), &(l, n)| (a + l, b + n));
    -ll / w as f64 / std::f64::consts::LN_2
}

/// Words as the harness counts them for WikiText: `len(re.split(r"\s+", text))`.
pub fn count_words(text: &str) -> usize {
    // Python's split on a regex keeps empty strings at both ends, so a text with leading or
    // trailing whitespace counts one more "word" per end.
    let mut count = 1;
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                count += 1;
            }
            in_space = true;
        } else {
            in_space = false;
        }
    }
    count
}

/// A regex answer filter: `regex_pattern` with `group_select` (negative counts from the end),
/// `[invalid]` when nothing matches, as the harness' `RegexFilter`.
pub struct RegexFilter {
    regex: Regex,
    group_select: isize,
}

/// What the filter returns when nothing matches.
pub const INVALID: &str = "[invalid]";

impl RegexFilter {
    /// Compiles the filter (patterns are the task's fixed ones; a bad pattern is a bug).
    pub fn new(pattern: &str, group_select: isize) -> Self {
        RegexFilter {
            regex: Regex::new(pattern).expect("task regex compiles"),
            group_select,
        }
    }

    /// Python `re.findall` then the harness' selection: the selected match; for patterns with
    /// several groups, its first non-empty group; stripped.
    pub fn apply(&self, text: &str) -> String {
        let groups = self.regex.captures_len() - 1;
        let matches: Vec<Vec<String>> = self
            .regex
            .captures_iter(text)
            .map(|c| {
                if groups == 0 {
                    vec![c.get(0).map_or("", |m| m.as_str()).to_string()]
                } else {
                    (1..=groups)
                        .map(|g| c.get(g).map_or("", |m| m.as_str()).to_string())
                        .collect()
                }
            })
            .collect();
        if matches.is_empty() {
            return INVALID.to_string();
        }
        let index = if self.group_select < 0 {
            matches.len() as isize + self.group_select
        } else {
            self.group_select
        };
        let Some(chosen) = usize::try_from(index).ok().and_then(|i| matches.get(i)) else {
            return INVALID.to_string();
        };
        let value = if chosen.len() == 1 {
            Some(chosen[0].as_str())
        } else {
            chosen.iter().map(String::as_str).find(|s| !s.is_empty())
        };
        match value {
            Some(v) => v.trim().to_string(),
            None => INVALID.to_string(),
        }
    }
}

/// GSM8K's normalization before exact match: remove `,`, `$`, everything through the last
/// `#### `, a final `.` (Python's `\.$` also matches before a final newline), then lower-case.
pub fn gsm8k_normalize(text: &str) -> String {
    let mut s: String = text.chars().filter(|&c| c != ',' && c != '$').collect();
    if let Some(pos) = s.rfind("#### ") {
        s = s[pos + 5..].to_string();
    }
    if let Some(stripped) = s.strip_suffix('.') {
        s = stripped.to_string();
    } else if let Some(body) = s.strip_suffix(".\n") {
        s = format!("{body}\n");
    }
    s.to_lowercase()
}

/// `exact_match` of one prediction against its reference under [`gsm8k_normalize`].
pub fn gsm8k_exact_match(prediction: &str, reference: &str) -> bool {
    gsm8k_normalize(prediction) == gsm8k_normalize(reference)
}

/// Index of the largest value (the first on ties, as `numpy.argmax`).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_by_hand() {
        // Values 1, 0, 1, 1: mean 0.75, sample variance 0.25, stderr sqrt(0.25 / 4) = 0.25.
        let (m, s) = mean_stderr(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(m, 0.75);
        assert!((s.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(mean_stderr(&[1.0]).1, None);
    }

    #[test]
    fn perplexities_by_hand() {
        // Two documents: ll -2 over 1 word and -4 over 3 words: exp(6 / 4).
        let items = [(-2.0, 1), (-4.0, 3)];
        assert!((weighted_perplexity(&items) - 1.5f64.exp()).abs() < 1e-12);
        assert!((bits_per_byte(&items) - 1.5 / std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn words_as_python_splits() {
        assert_eq!(count_words("a b  c"), 3);
        assert_eq!(count_words(" a\n"), 3);
        assert_eq!(count_words(""), 1);
    }

    #[test]
    fn gsm8k_strict_and_flexible() {
        let strict = RegexFilter::new(r"#### (\-?[0-9\.\,]+)", 0);
        let flexible = RegexFilter::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1);
        assert_eq!(strict.apply("so 5+5=10\n#### 1,000.\nQuestion"), "1,000.");
        assert_eq!(strict.apply("The answer is 7"), INVALID);
        assert_eq!(flexible.apply("It costs $1,234.50 in total."), "$1,234.50");
        assert_eq!(flexible.apply("from 3 to -4"), "-4");
        assert_eq!(flexible.apply("no digits"), INVALID);
        // Normalization: commas, dollars, the reference's "#### ", a trailing period.
        assert!(gsm8k_exact_match(
            "1,000.",
            "She pays 500 + 500.\n#### 1000"
        ));
        assert!(gsm8k_exact_match("$1,234.50", "#### 1234.50"));
        assert!(gsm8k_exact_match("-4", "#### -4"));
        assert!(!gsm8k_exact_match("4", "#### -4"));
        assert!(!gsm8k_exact_match("12.0", "#### 12"));
        assert!(!gsm8k_exact_match(INVALID, "#### 3"));
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
