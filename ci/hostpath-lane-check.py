#!/usr/bin/env python3
"""Compares a csi-clone-conformance JSON summary with a driver's expectations file.

Usage: hostpath-lane-check.py SUMMARY_JSON EXPECTATIONS_TXT HARNESS_EXIT_CODE

Expectations format, one case a line:

    <case id> <pass|advisory|fail|error|skipped>[|<another>...]  # why (required unless pass)

A status may list alternatives (`pass|advisory`) for a case whose outcome depends on timing
the driver does not control, e.g. a copy of a volume being written.
    @leaks <n>  # optional: resources the run is expected to leak (default 0)

Blank lines and lines starting with '#' are ignored. Fails (exit 1) when a case's status
differs, a case is on one side only, the leak count differs, or the harness exit code is not
one a finished run with these expectations can give (0 or 101; 6 only when errors are expected).
"""

import json
import sys

STATUSES = {"pass", "advisory", "fail", "error", "skipped"}


def load_expectations(path):
    expected, reasons, leaks, problems = {}, {}, 0, []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            text, _, comment = raw.partition("#")
            text, comment = text.strip(), comment.strip()
            if not text:
                continue
            where = f"{path}:{number}"
            fields = text.split()
            if fields[0] == "@leaks":
                if len(fields) != 2 or not fields[1].isdigit():
                    problems.append(f"{where}: expected '@leaks <n>'")
                else:
                    leaks = int(fields[1])
                continue
            if len(fields) != 2 or not set(fields[1].split("|")) <= STATUSES:
                problems.append(f"{where}: expected '<case id> <{'|'.join(sorted(STATUSES))}>'")
                continue
            case, status = fields
            if case in expected:
                problems.append(f"{where}: {case} listed twice")
            if status != "pass" and not comment:
                problems.append(f"{where}: {case} is expected to {status} but gives no reason")
            expected[case], reasons[case] = status, comment
    return expected, reasons, leaks, problems


def describe(case):
    outcome = case["outcome"]
    detail = outcome.get("message") or outcome.get("reason") or ""
    parts = [detail.splitlines()[0] if detail else ""]
    if outcome.get("expected") is not None:
        parts.append(f"expected {outcome['expected']}")
    if outcome.get("actual") is not None:
        parts.append(f"actual {outcome['actual']}")
    return "; ".join(p for p in parts if p)


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    summary_path, expectations_path, exit_code = argv[1], argv[2], int(argv[3])
    expected, reasons, expected_leaks, problems = load_expectations(expectations_path)
    try:
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{summary_path}: cannot read the summary: {e}")
        summary = None

    counts = {s: 0 for s in STATUSES}
    if summary is not None:
        if summary.get("schema_version") != 1:
            problems.append(f"{summary_path}: schema_version {summary.get('schema_version')}, this check reads 1")
        actual = {c["id"]: c for c in summary.get("cases", [])}
        for status in (c["outcome"]["status"] for c in actual.values()):
            counts[status] += 1
        for case_id in sorted(set(expected) | set(actual)):
            if case_id not in actual:
                problems.append(f"missing from the run:  {case_id} (expected {expected[case_id]})")
                continue
            got = actual[case_id]["outcome"]["status"]
            if case_id not in expected:
                detail = describe(actual[case_id])
                problems.append(f"not in expectations:  {case_id} {got}" + (f"  ({detail})" if detail else ""))
            elif got not in expected[case_id].split("|"):
                why = f"  [expected because: {reasons[case_id]}]" if reasons[case_id] else ""
                problems.append(
                    f"status changed:       {case_id} expected {expected[case_id]}, got {got}"
                    f"  ({describe(actual[case_id]) or 'no detail'}){why}"
                )
        leaks = summary.get("leaks", [])
        if len(leaks) != expected_leaks:
            problems.append(f"leaks: expected {expected_leaks}, got {len(leaks)}: {leaks}")

    allowed = {0, 101}
    if any("error" in e.split("|") for e in expected.values()):
        allowed.add(6)
    if exit_code not in allowed:
        problems.append(f"harness exit code {exit_code}, expected one of {sorted(allowed)}")

    print(
        f"hostpath lane: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['error']} errors, {counts['skipped']} skipped (harness exit {exit_code})"
    )
    if problems:
        print(f"hostpath lane: {len(problems)} difference(s) from {expectations_path}:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"hostpath lane: matches {expectations_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
