"""Compares the specs csi-sanity skipped (from its Ginkgo JSON report) with the expected list.

Each line of the expected list is `<spec path> | <reason>`; the reason is for readers, the
comparison uses the spec path only. Prints counts, and every difference."""
import json
import sys

report_path, expected_path = sys.argv[1], sys.argv[2]
counts = {}
skipped = set()
for suite in json.load(open(report_path)):
    for spec in suite.get("SpecReports") or []:
        state = spec["State"]
        counts[state] = counts.get(state, 0) + 1
        if state in ("skipped", "pending"):
            path = " / ".join(spec.get("ContainerHierarchyTexts") or [])
            skipped.add(f"{path} :: {spec['LeafNodeText']}")
expected = set()
for line in open(expected_path):
    line = line.strip()
    if line and not line.startswith("#"):
        expected.add(line.split(" | ")[0].strip())
print("  counts:", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
unexpected, vanished = sorted(skipped - expected), sorted(expected - skipped)
for name in unexpected:
    print(f"  skipped but not listed in csi-sanity-skips.txt: {name}")
for name in vanished:
    print(f"  listed in csi-sanity-skips.txt but ran: {name}")
sys.exit(1 if unexpected or vanished else 0)
