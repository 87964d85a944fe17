#!/usr/bin/env bash
# The Kubernetes lane: `run --local-cluster` with the default (reference) driver, its JUnit
# checked, and the host compared before and after (ci/host-state.sh: sysctls, mounts, loop
# devices, host paths, processes). Prints the lane's wall time and the stack's peak memory.
# Expects a release build and the peers from ci/install-k8s.sh. The run's work dir is the
# lane's own temp dir: the EXIT trap (ci/lane-lib.sh) stops what the lane started by pid and
# unmounts and detaches only what lies under that dir.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/lane-lib.sh
source ci/lane-lib.sh
lane_tmp csi-clone-local-cluster-lane cc-lcl
# The harness's own tear-down of the cluster gets this long after a signal.
LANE_STOP_GRACE=100

out="target/csi-clone/local-cluster"
mkdir -p "$out"
bin="./target/release/csi-clone-conformance"
k8s_bin="$(bash ci/install-k8s.sh | tail -n 1)"

bash ci/host-state.sh >"$out/host-before.txt"

# Peak memory of the whole stack: the sum of the RSS of every process running from the peer
# cache or the release dir, sampled each second.
sample_memory() {
    local cache="${CSI_CLONE_CACHE:-$HOME/.cache/csi-clone-conformance}" peak=0 total
    local until=$((SECONDS + 3600)) # stopped by the lane long before; never outlives it by much
    while ((SECONDS < until)); do
        total=0
        for pid in /proc/[0-9]*; do
            exe="$(readlink "$pid/exe" 2>/dev/null)" || continue
            case "$exe" in
            "$cache"/* | "$PWD"/target/release/*)
                rss="$(awk '/^VmRSS:/ {print $2}' "$pid/status" 2>/dev/null || echo 0)"
                total=$((total + ${rss:-0}))
                ;;
            esac
        done
        ((total > peak)) && peak=$total && echo "$peak" >"$out/peak-rss-kib"
        sleep 1
    done
}
sample_memory &
sampler=$!
lane_track "$sampler"

started=$SECONDS
status=0
lane_run "$out/run.log" "$bin" run --local-cluster --k8s-bin "$k8s_bin" --work-dir "$LANE_TMP" \
    --junit "$out/junit.xml" --json "$out/summary.json" --markdown "$out/summary.md" \
    k8s_ || status=$?
# The cross-namespace rules once more with the CrossNamespaceVolumeDataSource gate on (API
# server, controller manager, csi-provisioner, with the ReferenceGrant CRD): nothing may be
# dropped then, so no case may be advisory.
gated=0
lane_run "$out/gated.log" "$bin" run --local-cluster --k8s-bin "$k8s_bin" --work-dir "$LANE_TMP/gated" \
    --feature-gates CrossNamespaceVolumeDataSource=true \
    --junit "$out/gated.xml" --json "$out/gated.json" --markdown "$out/gated.md" \
    k8s_namespace || gated=$?
elapsed=$((SECONDS - started))
lane_stop "${LANE_PIDS[0]}" 5

bash ci/host-state.sh >"$out/host-after.txt"
if ! diff -u "$out/host-before.txt" "$out/host-after.txt"; then
    echo "local-cluster lane: the host is not as it was before the run (diff above)" >&2
    exit 1
fi
# 101 is expected only when every failure is a known upstream deviation.
for pair in "default:$status" "gated:$gated"; do
    run="${pair%%:*}" code="${pair##*:}"
    if ((code != 0 && code != 101)); then
        echo "local-cluster lane: the $run run exited $code" >&2
        exit "$code"
    fi
done
python3 ci/k8s-lane-check.py "$out/junit.xml" "$status" default 25 ci/k8s-known-deviations.txt
python3 ci/k8s-lane-check.py "$out/gated.xml" "$gated" gated 4 ci/k8s-known-deviations.txt --no-advisory
echo "local-cluster lane: ${elapsed}s wall, stack peak RSS $(( $(cat "$out/peak-rss-kib" 2>/dev/null || echo 0) / 1024 )) MiB"
