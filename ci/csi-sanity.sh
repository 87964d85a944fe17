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
work="$(mktemp -d /var/tmp/csi-sanity.XXXXXX)"
driver_pid=""

cleanup() {
    [[ -n "$driver_pid" ]] && kill "$driver_pid" 2>/dev/null && wait "$driver_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

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
    for _ in $(seq 100); do [[ -S "$dir/csi.sock" ]] && break; sleep 0.1; done
    set +e
    (cd "$dir" && "$PEERS_BIN/csi-sanity" --csi.endpoint "$dir/csi.sock" \
        --csi.testvolumeaccesstype "$access" --csi.testvolumesize "$size" \
        --csi.mountdir "$dir/mnt" --csi.stagingdir "$dir/staging" \
        --ginkgo.no-color --ginkgo.junit-report "$OUT/$name-junit.xml" \
        --ginkgo.json-report "$OUT/$name.json" >"$OUT/$name.log" 2>&1)
    rc=$?
    set -e
    kill "$driver_pid" && wait "$driver_pid" || true
    driver_pid=""
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
