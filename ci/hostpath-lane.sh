#!/usr/bin/env bash
# Runs the full conformance harness against csi-driver-host-path's hostpathplugin (pinned in
# ci/install-hostpath.sh) and compares the outcome with fixtures/expectations/hostpath.txt.
# The lane fails on any difference, on a harness exit code other than 0/101, or when the
# driver cannot be started; the harness's own 101 (some cases fail) is expected here.
# Needs root (hostpath's block volumes use loop devices; the harness mounts and reads them).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
PEERS_BIN="${PEERS_BIN:-$HOME/.cache/csi-clone-conformance/bin}"
OUT="${HOSTPATH_OUT:-$repo/target/csi-clone/hostpath}"
EXPECTATIONS="${HOSTPATH_EXPECTATIONS:-$repo/fixtures/expectations/hostpath.txt}"
PROFILE="$repo/fixtures/drivers/hostpath.yaml"
HARNESS="$repo/target/debug/csi-clone-conformance"

# HOSTPATH_BIN names an already built hostpathplugin; otherwise the pinned one is installed.
if [[ -z "${HOSTPATH_BIN:-}" ]]; then
    PEERS_BIN="$PEERS_BIN" bash "$here/install-hostpath.sh"
    HOSTPATH_BIN="$PEERS_BIN/hostpathplugin"
fi
(cd "$repo" && cargo build -q -p suites)

tmp="$(mktemp -d /var/tmp/hostpath-lane.XXXXXX)"
driver_pid=""

# Undo only what lives under $tmp: mounts (deepest first), loop devices backed by files
# under $tmp (also those whose file is already deleted), then the directory itself.
cleanup() {
    if [[ -n "$driver_pid" ]]; then
        kill "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
        driver_pid=""
    fi
    local mnt dev back
    while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v p="$tmp/" 'index($2, p) == 1 { print length($2) "\t" $2 }' /proc/self/mounts \
        | sort -rn | cut -f2-)
    if [[ -d "$tmp/state" ]]; then
        while IFS= read -r -d '' back; do
            losetup -j "$back" -O NAME -n 2>/dev/null | while read -r dev; do
                losetup -d "$dev" 2>/dev/null || true
            done
        done < <(find "$tmp/state" -type f -print0 2>/dev/null)
    fi
    while read -r dev back; do
        [[ "$back" == "$tmp/"* ]] && losetup -d "$dev" 2>/dev/null || true
    done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null)
    rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

mkdir -p "$OUT" "$tmp/state" "$tmp/work"
rm -f "$OUT"/junit.xml "$OUT"/summary.json "$OUT"/summary.md
echo "hostpath lane: $("$HOSTPATH_BIN" --version 2>&1 | head -n 1)"
"$HOSTPATH_BIN" --endpoint "unix://$tmp/hostpath.sock" --nodeid hostpath-node \
    --statedir "$tmp/state" --drivername hostpath.csi.k8s.io --v 4 \
    >"$OUT/driver.log" 2>&1 &
driver_pid=$!
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

set +e
"$HARNESS" run --endpoint "unix://$tmp/hostpath.sock" --profile "$PROFILE" \
    --junit "$OUT/junit.xml" --json "$OUT/summary.json" --markdown "$OUT/summary.md" \
    --seed 1 --work-dir "$tmp/work" -q >"$OUT/harness.log" 2>&1
rc=$?
set -e
tail -n 5 "$OUT/harness.log"

kill "$driver_pid" 2>/dev/null || true
wait "$driver_pid" 2>/dev/null || true
driver_pid=""

python3 "$here/hostpath-lane-check.py" "$OUT/summary.json" "$EXPECTATIONS" "$rc"
