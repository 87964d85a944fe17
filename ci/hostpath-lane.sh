#!/usr/bin/env bash
# Runs the full conformance harness against csi-driver-host-path's hostpathplugin, built by
# whoever runs the lane outside this repository (HOSTPATH_BIN; this project neither vendors nor
# builds third-party drivers), and compares the outcome with an expectations file.
# The lane fails on any difference, on a harness exit code other than 0/101, or when the
# driver cannot be started; the harness's own 101 (some cases fail) is expected here.
# Needs root (hostpath's block volumes use loop devices; the harness mounts and reads them).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

OUT="${HOSTPATH_OUT:-$repo/target/csi-clone/hostpath}"
EXPECTATIONS="${HOSTPATH_EXPECTATIONS:-$repo/fixtures/expectations/hostpath.txt}"
PROFILE="$repo/fixtures/drivers/hostpath.yaml"
HARNESS="$repo/target/debug/csi-clone-conformance"

if [[ ! -x "${HOSTPATH_BIN:-}" ]]; then
    echo "hostpath lane: set HOSTPATH_BIN to a hostpathplugin binary you built (docs/hostpath-findings.md)" >&2
    exit 2
fi
(cd "$repo" && cargo build -q -p suites)

# Everything the driver and the harness create lives under the lane's own temp dir: the EXIT
# trap (ci/lane-lib.sh) stops the driver by pid, unmounts what is mounted below the dir,
# detaches loop devices backed by files below it, then removes it without crossing a mount.
# shellcheck source=ci/lane-lib.sh
source "$here/lane-lib.sh"
lane_tmp hostpath-lane
tmp="$LANE_TMP"
# The whole harness run against hostpath; a hang is stopped and fails the lane.
HOSTPATH_LIMIT="${HOSTPATH_LIMIT:-1200}"

mkdir -p "$OUT" "$tmp/state" "$tmp/work"
rm -f "$OUT"/junit.xml "$OUT"/summary.json "$OUT"/summary.md
echo "hostpath lane: $("$HOSTPATH_BIN" --version 2>&1 | head -n 1)"
"$HOSTPATH_BIN" --endpoint "unix://$tmp/hostpath.sock" --nodeid hostpath-node \
    --statedir "$tmp/state" --drivername hostpath.csi.k8s.io --v 4 \
    >"$OUT/driver.log" 2>&1 &
driver_pid=$!
lane_track "$driver_pid"
for _ in $(seq 200); do
    [[ -S "$tmp/hostpath.sock" ]] && break
    kill -0 "$driver_pid" 2>/dev/null || break
    sleep 0.05
done
if [[ ! -S "$tmp/hostpath.sock" ]]; then
    echo "hostpath lane: hostpathplugin did not open its socket; its log:" >&2
    tail -n 30 "$OUT/driver.log" >&2
    exit 1
fi

# --foreground: in the lane's process group, so a signal to the lane reaches the harness.
timeout --foreground -k 60 "$HOSTPATH_LIMIT" "$HARNESS" run --endpoint "unix://$tmp/hostpath.sock" \
    --profile "$PROFILE" \
    --junit "$OUT/junit.xml" --json "$OUT/summary.json" --markdown "$OUT/summary.md" \
    --seed 1 --work-dir "$tmp/work" --skip k8s_ -q >"$OUT/harness.log" 2>&1 &
harness_pid=$!
lane_track "$harness_pid"
rc=0
wait "$harness_pid" || rc=$?
((rc == 124 || rc == 137)) && echo "hostpath lane: the harness TIMED OUT after ${HOSTPATH_LIMIT}s" >&2
tail -n 5 "$OUT/harness.log"
lane_stop "${LANE_PIDS[0]}" 30

python3 "$here/hostpath-lane-check.py" "$OUT/summary.json" "$EXPECTATIONS" "$rc"
