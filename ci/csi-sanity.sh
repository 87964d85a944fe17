#!/usr/bin/env bash
# Runs upstream csi-sanity against the reference driver in three lanes (mount with ext4,
# mount with xfs, block). A lane fails on any failed spec, and also when the set of skipped
# specs differs from ci/csi-sanity-skips.txt, so a new skip is never silent.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
PEERS_BIN="${PEERS_BIN:-$HOME/.cache/csi-clone-conformance/bin}"
DRIVER="${DRIVER:-$repo/target/debug/reference-driver}"
OUT="${CSI_SANITY_OUT:-$repo/target/csi-sanity}"
# Each lane's sockets, state, staging and target dirs live under the lane's own temp dir: the
# EXIT trap (ci/lane-lib.sh) stops the driver by pid, unmounts and detaches what is below it.
# shellcheck source=ci/lane-lib.sh
source "$here/lane-lib.sh"
lane_tmp csi-sanity
work="$LANE_TMP"
# One spec run may take minutes; a lane that hangs is stopped (and fails) after this long.
SANITY_LIMIT="${SANITY_LIMIT:-900}"

mkdir -p "$OUT"
# lane  driver-args  access-type  volume-size
lanes=(
    "mount-ext4|--default-fs-type ext4|mount|104857600"
    "mount-xfs|--default-fs-type xfs|mount|314572800"
    "block|--default-fs-type ext4|block|104857600"
)
status=0
for lane in "${lanes[@]}"; do
    IFS='|' read -r name driver_args access size <<<"$lane"
    dir="$work/$name"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$DRIVER" --endpoint "unix://$dir/csi.sock" --state-dir "$dir/state" --node-id sanity-node \
        $driver_args 2>"$OUT/$name-driver.log" &
    driver_pid=$!
    lane_track "$driver_pid"
    for _ in $(seq 100); do
        [[ -S "$dir/csi.sock" ]] && break
        kill -0 "$driver_pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -S "$dir/csi.sock" ]]; then
        echo "csi-sanity $name: the driver did not open its socket within 10 s; its log:" >&2
        tail -n 20 "$OUT/$name-driver.log" >&2
        exit 1
    fi
    # --foreground: in the lane's process group, so a signal to the lane reaches it too; and
    # tracked, so the EXIT trap stops it before undoing the mounts it works on.
    (cd "$dir" && exec timeout --foreground -k 30 "$SANITY_LIMIT" "$PEERS_BIN/csi-sanity" \
        --csi.endpoint "$dir/csi.sock" \
        --csi.testvolumeaccesstype "$access" --csi.testvolumesize "$size" \
        --csi.mountdir "$dir/mnt" --csi.stagingdir "$dir/staging" \
        --ginkgo.no-color --ginkgo.junit-report "$OUT/$name-junit.xml" \
        --ginkgo.json-report "$OUT/$name.json" >"$OUT/$name.log" 2>&1) &
    sanity_pid=$!
    lane_track "$sanity_pid"
    rc=0
    wait "$sanity_pid" || rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "csi-sanity $name: TIMED OUT after ${SANITY_LIMIT}s (csi-sanity stopped)" >&2
    fi
    # The driver was started by this loop: stopped by its pid, then what it left is undone.
    lane_stop "${LANE_PIDS[-2]}" 30
    lane_unmount_under "$dir"
    lane_detach_loops_under "$dir"
    echo "csi-sanity $name: $(tail -n 1 "$OUT/$name.log")"
    if ((rc != 0)); then
        grep '\[FAIL\]' "$OUT/$name.log" || true
        status=1
    fi
    if ! python3 "$here/csi-sanity-skips.py" "$OUT/$name.json" "$here/csi-sanity-skips.txt"; then
        status=1
    fi
done
exit "$status"
