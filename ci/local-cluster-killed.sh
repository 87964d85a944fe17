#!/usr/bin/env bash
# The killed-harness lane: `run --local-cluster` is SIGKILLed while a case has a volume mounted
# in a pod, then `local-cluster clean` must undo everything the run left (processes, mounts,
# loop devices, sysctls, host paths) from the run's record: ci/host-state.sh after must equal
# before. Expects a release build and the peers from ci/install-k8s.sh. Every wait is bounded;
# the EXIT trap kills the harness (by the pid this script started) and cleans, whatever failed.
set -euo pipefail
cd "$(dirname "$0")/.."

out="target/csi-clone/local-cluster-killed"
mkdir -p "$out"
bin="./target/release/csi-clone-conformance"
work="/var/tmp/csi-clone-killed-lane"
runs="/var/lib/csi-clone-conformance/local-cluster/runs"
k8s_bin="$(timeout -k 10 3600 bash ci/install-k8s.sh | tail -n 1)"

harness=""
clean() {
    timeout -k 10 300 "$bin" local-cluster clean
}
on_exit() {
    local status=$?
    if [[ -n "$harness" ]] && kill -0 "$harness" 2>/dev/null; then
        kill -KILL "$harness" 2>/dev/null || true
    fi
    clean >"$out/clean-on-exit.txt" 2>&1 || echo "local-cluster-killed lane: the clean on exit failed (see $out/clean-on-exit.txt)" >&2
    # The harness's own per-run directory, empty once the cluster's is gone (rmdir: only if empty).
    rmdir "$work"/run-* "$work" 2>/dev/null || true
    exit "$status"
}
trap on_exit EXIT

# Polls `check` each second up to `limit` seconds; fails on the deadline or when the harness is
# gone. Prints the seconds waited.
wait_for() {
    local what="$1" limit="$2" check="$3" waited=0
    until eval "$check"; do
        if ((waited >= limit)); then
            echo "local-cluster-killed lane: no $what within ${limit}s" >&2
            return 1
        fi
        if ! kill -0 "$harness" 2>/dev/null; then
            echo "local-cluster-killed lane: the run ended before $what (see $out/run.log)" >&2
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "$waited"
}

timeout -k 10 300 "$bin" local-cluster clean >"$out/clean-before.txt"
bash ci/host-state.sh >"$out/host-before.txt"

started=$SECONDS
"$bin" run --local-cluster --k8s-bin "$k8s_bin" --work-dir "$work" \
    --junit "$out/junit.xml" --json "$out/summary.json" --markdown "$out/summary.md" \
    k8s_ >"$out/run.log" 2>&1 &
harness=$!

# The run's record is named after its owner, the harness: <pid>-<start time>.json; it names the
# cluster's directory.
wait_for "run record" 60 "compgen -G '$runs/$harness-*.json' >/dev/null" >/dev/null
record="$(compgen -G "$runs/$harness-*.json")"
run_dir="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["snapshot"]["run_dir"])' "$record")"
wait_for "local cluster" 600 "grep -qs 'local cluster up' '$out/run.log'" >/dev/null
up=$((SECONDS - started))
# In a case: the kubelet has a loop-backed filesystem of the driver mounted below the run.
wait_for "volume mounted" 600 \
    "grep -q ' $run_dir/kubelet/.* - \\(ext4\\|xfs\\) /dev/loop' /proc/self/mountinfo" >/dev/null
mounted=$((SECONDS - started))

processes=$(grep -c '"name":' "$record")
mounts=$(grep -c " $run_dir/" /proc/self/mountinfo || true)
loops=$(grep -l "^$run_dir/" /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)
kill -KILL "$harness"
# Reaped within the deadline, or reported (a harness in D state cannot be reaped at all).
if timeout 30 bash -c "while [[ -e /proc/$harness ]] && ! grep -q '^[^)]*) Z' /proc/$harness/stat 2>/dev/null; do sleep 0.2; done"; then
    wait "$harness" 2>/dev/null || true
else
    echo "local-cluster-killed lane: harness $harness still there 30s after SIGKILL: $(cat /proc/$harness/stat)" >&2
    exit 1
fi
harness=""
echo "local-cluster-killed lane: killed the harness $((SECONDS - started))s after its start (cluster up at ${up}s, a volume mounted at ${mounted}s) with $processes recorded processes, $mounts mounts and $loops loop devices of the run"

cleaning=$SECONDS
status=0
clean | tee "$out/clean.txt" || status=$?
echo "local-cluster-killed lane: local-cluster clean took $((SECONDS - cleaning))s, exit $status"
bash ci/host-state.sh >"$out/host-after.txt"
if ! diff -u "$out/host-before.txt" "$out/host-after.txt"; then
    echo "local-cluster-killed lane: the host is not as it was before the run (diff above)" >&2
    exit 1
fi
if ((status != 0)); then
    exit "$status"
fi
if [[ -e "$run_dir" ]]; then
    echo "local-cluster-killed lane: $run_dir is still there" >&2
    exit 1
fi
echo "local-cluster-killed lane: the host is as it was before the run"
