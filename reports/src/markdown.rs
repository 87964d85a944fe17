//! Markdown summary writer, meant for a CI step summary (GitHub-flavoured Markdown).
//!
//! Layout: a verdict title, a run-info table, a per-suite counts table, then sections for
//! failures, errors, skipped cases, cleanup errors and leaks (each only when non-empty).
//! Everything that comes from the driver or the environment is escaped, since a gRPC error
//! message could otherwise inject Markdown or HTML into the summary page.

use std::collections::BTreeMap;

use crate::model::{CaseRecord, Counts, Outcome, RunReport};

/// Renders `report` as a Markdown summary.
pub fn to_markdown(report: &RunReport) -> String {
    let cases = report.sorted_cases();
    let mut out = String::new();
    match &report.target_lost {
        Some(lost) => line(&mut out, format!("## 🔌 Target lost {lost}")),
        None => line(
            &mut out,
            format!("## {}", verdict(report.counts(), report.leaks.len())),
        ),
    }
    line(&mut out, "");
    run_table(&mut out, report);
    suite_table(&mut out, &cases);
    failures(&mut out, &cases);
    errors(&mut out, &cases);
    skipped(&mut out, &cases);
    advisories(&mut out, &cases);
    cleanup_errors(&mut out, &cases);
    leaks(&mut out, &report.leaks);
    out
}

/// One-line verdict: the most serious finding first, the rest as a comma-separated tail.
fn verdict(counts: Counts, leaks: usize) -> String {
    let total = counts.total();
    let (icon, head) = if total == 0 {
        ("⚠️", "no cases ran".to_string())
    } else if counts.failed > 0 {
        (
            "❌",
            format!("{} of {total} {} failed", counts.failed, cases_word(total)),
        )
    } else if leaks > 0 {
        (
            "❌",
            format!(
                "{} of {total} {} passed",
                counts.passed + counts.advisory,
                cases_word(total)
            ),
        )
    } else if counts.errors > 0 {
        (
            "⚠️",
            format!("{} of {total} {} errored", counts.errors, cases_word(total)),
        )
    } else if counts.skipped > 0 {
        (
            "✅",
            format!(
                "{} of {total} {} passed",
                counts.passed + counts.advisory,
                cases_word(total)
            ),
        )
    } else {
        ("✅", format!("all {total} {} passed", cases_word(total)))
    };
    let mut tail = Vec::new();
    // Errors are the head only when nothing worse happened; otherwise they go in the tail.
    if counts.errors > 0 && (counts.failed > 0 || leaks > 0) {
        tail.push(format!("{} errored", counts.errors));
    }
    if counts.advisory > 0 {
        tail.push(format!("{} advisory", counts.advisory));
    }
    if counts.skipped > 0 {
        tail.push(format!("{} skipped", counts.skipped));
    }
    if leaks > 0 {
        let noun = if leaks == 1 { "resource" } else { "resources" };
        tail.push(format!("{leaks} leaked {noun}"));
    }
    let mut verdict = format!("{icon} {head}");
    for part in tail {
        verdict.push_str(", ");
        verdict.push_str(&part);
    }
    verdict
}

fn cases_word(n: usize) -> &'static str {
    if n == 1 { "case" } else { "cases" }
}

fn run_table(out: &mut String, report: &RunReport) {
    let run = &report.run;
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "_unknown_".to_string()
        } else {
            text(s)
        }
    };
    let mut rows = vec![
        ("Driver", or_unknown(&run.driver_name)),
        ("Version", or_unknown(&run.driver_version)),
        ("Target", text(&run.target)),
        ("Endpoint", code(&run.endpoint, true)),
    ];
    if run.node_endpoint != run.endpoint {
        rows.push(("Node endpoint", code(&run.node_endpoint, true)));
    }
    rows.extend([
        ("Profile", code(&run.profile, true)),
        ("Seed", format!("`{}`", run.seed)),
        ("Started", text(&run.started_at)),
        ("Duration", format!("{:.2}s", report.duration_secs)),
        ("Tool", text(&run.tool)),
    ]);
    line(out, "| Run | |");
    line(out, "|---|---|");
    for (key, value) in rows {
        line(out, format!("| {key} | {value} |"));
    }
    for (key, value) in &run.properties {
        line(out, format!("| {} | {} |", text(key), text(value)));
    }
    line(out, "");
}

fn suite_table(out: &mut String, cases: &[&CaseRecord]) {
    let mut by_suite: BTreeMap<&str, Vec<&CaseRecord>> = BTreeMap::new();
    for case in cases {
        by_suite.entry(case.suite.as_str()).or_default().push(case);
    }
    line(
        out,
        "| Suite | Passed | Advisory | Failed | Errors | Skipped |",
    );
    line(out, "|---|--:|--:|--:|--:|--:|");
    for (suite, cases) in &by_suite {
        let c = Counts::of(cases.iter().copied());
        let name = code(suite, true);
        line(
            out,
            format!(
                "| {name} | {} | {} | {} | {} | {} |",
                c.passed, c.advisory, c.failed, c.errors, c.skipped
            ),
        );
    }
    let c = Counts::of(cases.iter().copied());
    line(
        out,
        format!(
            "| **Total** | **{}** | **{}** | **{}** | **{}** | **{}** |",
            c.passed, c.advisory, c.failed, c.errors, c.skipped
        ),
    );
    line(out, "");
}

fn failures(out: &mut String, cases: &[&CaseRecord]) {
    let failing: Vec<_> = cases
        .iter()
        .filter_map(|case| match &case.outcome {
            Outcome::Fail {
                message,
                expected,
                actual,
            } => Some((case, message, expected, actual)),
            _ => None,
        })
        .collect();
    if failing.is_empty() {
        return;
    }
    line(out, "### Failures");
    line(out, "");
    for (case, message, expected, actual) in failing {
        line(out, format!("#### {}", code(&case.id, false)));
        line(out, "");
        line(out, format!("- **Rule:** {}", text(&case.rule)));
        if let Some(expected) = expected {
            line(out, format!("- **Expected:** {}", code(expected, false)));
        }
        if let Some(actual) = actual {
            line(out, format!("- **Actual:** {}", code(actual, false)));
        }
        line(out, format!("- **Message:** {}", text(message)));
        line(out, "");
        trace(out, &case.trace);
    }
}

fn errors(out: &mut String, cases: &[&CaseRecord]) {
    let erroring: Vec<_> = cases
        .iter()
        .filter_map(|case| match &case.outcome {
            Outcome::Error { message } => Some((case, message)),
            _ => None,
        })
        .collect();
    if erroring.is_empty() {
        return;
    }
    line(out, "### Errors");
    line(out, "");
    line(
        out,
        "The harness or infrastructure broke; these say nothing about conformance.",
    );
    line(out, "");
    for (case, message) in erroring {
        line(out, format!("#### {}", code(&case.id, false)));
        line(out, "");
        line(out, format!("- **Rule:** {}", text(&case.rule)));
        line(out, format!("- **Message:** {}", text(message)));
        line(out, "");
        trace(out, &case.trace);
    }
}

fn skipped(out: &mut String, cases: &[&CaseRecord]) {
    let skipped: Vec<_> = cases
        .iter()
        .filter_map(|case| match &case.outcome {
            Outcome::Skipped { reason } => Some((case, reason)),
            _ => None,
        })
        .collect();
    if skipped.is_empty() {
        return;
    }
    line(out, "### Skipped");
    line(out, "");
    for (case, reason) in skipped {
        line(
            out,
            format!("- {}: {}", code(&case.id, false), text(reason)),
        );
    }
    line(out, "");
}

fn advisories(out: &mut String, cases: &[&CaseRecord]) {
    let noted: Vec<_> = cases
        .iter()
        .filter_map(|case| match &case.outcome {
            Outcome::Advisory { note } => Some((case, note)),
            _ => None,
        })
        .collect();
    if noted.is_empty() {
        return;
    }
    line(out, "### Advisory");
    line(out, "");
    line(
        out,
        "Passed, with a note: what a user of this stack gets; no component is at fault.",
    );
    line(out, "");
    for (case, note) in noted {
        line(out, format!("- {}: {}", code(&case.id, false), text(note)));
    }
    line(out, "");
}

fn cleanup_errors(out: &mut String, cases: &[&CaseRecord]) {
    if cases.iter().all(|case| case.cleanup_errors.is_empty()) {
        return;
    }
    line(out, "### Cleanup errors");
    line(out, "");
    for case in cases {
        for error in &case.cleanup_errors {
            line(out, format!("- {}: {}", code(&case.id, false), text(error)));
        }
    }
    line(out, "");
}

fn leaks(out: &mut String, leaks: &[String]) {
    if leaks.is_empty() {
        return;
    }
    line(out, "### Leaks");
    line(out, "");
    line(out, "Resources the run created and could not remove:");
    line(out, "");
    for leak in leaks {
        line(out, format!("- {}", code(leak, false)));
    }
    line(out, "");
}

/// The RPC trace, collapsed so long traces do not bury the next failure.
fn trace(out: &mut String, trace: &[String]) {
    if trace.is_empty() {
        return;
    }
    let lines = if trace.len() == 1 { "line" } else { "lines" };
    line(
        out,
        format!(
            "<details><summary>RPC trace ({} {lines})</summary>",
            trace.len()
        ),
    );
    line(out, "");
    // The fence must be longer than any backtick run inside, or the block ends early.
    let longest = trace
        .iter()
        .map(|l| longest_backtick_run(l))
        .max()
        .unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    line(out, format!("{fence}text"));
    for entry in trace {
        line(out, entry.replace(['\r', '\n'], " "));
    }
    line(out, fence);
    line(out, "");
    line(out, "</details>");
    line(out, "");
}

fn line(out: &mut String, s: impl AsRef<str>) {
    out.push_str(s.as_ref());
    out.push('\n');
}

/// Escapes Markdown and HTML in inline text; newlines become `<br>` so text stays in its
/// list item or table cell.
fn text(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\r' => {}
            '\n' => out.push_str("<br>"),
            // An underscore inside a word never starts emphasis in GFM; leaving it keeps
            // names such as NOT_FOUND readable in the raw Markdown.
            '_' if i > 0
                && chars[i - 1].is_alphanumeric()
                && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric()) =>
            {
                out.push('_');
            }
            // `<` and `&` are enough to stop HTML and entities; a lone `>` only matters at
            // the start of a line, where inline text never lands, so `->` stays readable.
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// An inline code span that survives backticks in `s`; `in_table` also escapes `|`, which
/// GFM treats as a cell separator even inside code spans.
fn code(s: &str, in_table: bool) -> String {
    let s = s.replace(['\r', '\n'], " ");
    let s = if in_table { s.replace('|', "\\|") } else { s };
    let fence = "`".repeat(longest_backtick_run(&s) + 1);
    // Padding keeps a leading or trailing backtick from merging with the fence.
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: usize, failed: usize, errors: usize, skipped: usize) -> Counts {
        Counts {
            passed,
            failed,
            errors,
            skipped,
            advisory: 0,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(counts(45, 0, 0, 0), 0), "✅ all 45 cases passed");
        assert_eq!(verdict(counts(1, 0, 0, 0), 0), "✅ all 1 case passed");
        assert_eq!(verdict(counts(43, 2, 0, 0), 0), "❌ 2 of 45 cases failed");
        assert_eq!(
            verdict(counts(40, 2, 1, 2), 3),
            "❌ 2 of 45 cases failed, 1 errored, 2 skipped, 3 leaked resources"
        );
        assert_eq!(
            verdict(counts(44, 0, 0, 1), 1),
            "❌ 44 of 45 cases passed, 1 skipped, 1 leaked resource"
        );
        assert_eq!(verdict(counts(44, 0, 1, 0), 0), "⚠️ 1 of 45 cases errored");
        assert_eq!(
            verdict(counts(43, 0, 0, 2), 0),
            "✅ 43 of 45 cases passed, 2 skipped"
        );
        assert_eq!(verdict(counts(0, 0, 0, 0), 0), "⚠️ no cases ran");
    }

    #[test]
    fn escaping() {
        assert_eq!(text("NOT_FOUND"), "NOT_FOUND");
        assert_eq!(text("_x_ *y* <b>|"), "\\_x\\_ \\*y\\* \\<b>\\|");
        assert_eq!(text("a -> b"), "a -> b");
        assert_eq!(text("a\r\nb"), "a<br>b");
        assert_eq!(code("a`b", false), "``a`b``");
        assert_eq!(code("`a", false), "`` `a ``");
        assert_eq!(code("a|b", true), "`a\\|b`");
    }
}
