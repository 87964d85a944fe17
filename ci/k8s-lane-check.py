#!/usr/bin/env python3
"""Checks one local-cluster run's JUnit against the known upstream deviations.

usage: k8s-lane-check.py JUNIT EXIT-STATUS RUN MIN-CASES KNOWN-FILE [--no-advisory]

KNOWN-FILE lines: case id <TAB> run <TAB> upstream component and version <TAB> reason. Only the
lines of RUN (`default`, or `gated` for the run with CrossNamespaceVolumeDataSource on) count.
The run passes when exactly the listed cases fail (a listed case that passes is news too), none
errored or was skipped, the exit status matches, at least MIN-CASES k8s cases ran, and, with
--no-advisory, none is advisory.
"""
import sys
import xml.etree.ElementTree as ET


def main() -> None:
    junit, status, run, min_cases, known_file = sys.argv[1:6]
    no_advisory = "--no-advisory" in sys.argv[6:]
    status, min_cases = int(status), int(min_cases)
    known = {}
    for line in open(known_file, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            case, for_run, upstream, reason = line.rstrip("\n").split("\t")
            if for_run == run:
                known[case] = f"{upstream}: {reason}"
    cases = [c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name", "").startswith("k8s_")]
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    broken = [c.get("name") for c in cases if c.find("error") is not None or c.find("skipped") is not None]
    advisory = [c.get("name") for c in cases if any(p.get("name") == "advisory" for p in c.iter("property"))]
    problems = []
    if len(cases) < min_cases:
        problems.append(f"only {len(cases)} k8s cases ran (at least {min_cases} expected)")
    if broken:
        problems.append(f"errored or skipped: {broken}")
    if failed - known.keys():
        problems.append(f"failed, not a known upstream deviation: {sorted(failed - known.keys())}")
    if known.keys() - failed:
        problems.append(f"known deviations that no longer fail (update {known_file}): {sorted(known.keys() - failed)}")
    if (status == 101) != bool(failed) or status not in (0, 101):
        problems.append(f"exit {status} does not match {len(failed)} failure(s)")
    if no_advisory and advisory:
        problems.append(f"advisory, where nothing may be dropped: {advisory}")
    if problems:
        sys.exit(f"local-cluster lane ({run}): " + "; ".join(problems))
    passed = len(cases) - len(failed) - len(advisory)
    print(f"local-cluster lane ({run}): {len(cases)} k8s cases: {passed} passed, {len(advisory)} advisory, "
          f"{len(failed)} known upstream deviation(s)")
    for case in sorted(failed):
        print(f"  known deviation {case}: {known[case]}")


main()
