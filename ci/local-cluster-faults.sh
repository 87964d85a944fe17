#!/usr/bin/env bash
# Proof that the Kubernetes cases can fail: the local cluster runs the reference driver with a
# deliberate fault (reference-driver --fault), and each case listed for the fault must fail
# (exit 101, the case a failure in the JUnit). Every k8s_clone case is listed under at least
# one fault. The host is compared before and after, as in the clean lane. Each run's work dir
# is under the lane's own temp dir, which the EXIT trap (ci/lane-lib.sh) restores.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/lane-lib.sh
source ci/lane-lib.sh
lane_tmp csi-clone-local-cluster-faults cc-lcf
LANE_STOP_GRACE=100

out="target/csi-clone/local-cluster-faults"
mkdir -p "$out"
bin="./target/release/csi-clone-conformance"
k8s_bin="$(bash ci/install-k8s.sh | tail -n 1)"

# The reference profile with short cluster timeouts: a clone that never binds fails in 30 s.
profile="$out/profile.yaml"
cp fixtures/drivers/reference.yaml "$profile"
printf 'timeouts:\n  bind_secs: 30\n  pod_secs: 90\n  delete_secs: 120\n' >>"$profile"

# fault -> the cases it must kill (suite-relative ids).
declare -A KILLS=(
    [clone-empty]="filesystem::clone_binds_with_the_source_data block::clone_binds_with_the_source_data filesystem::clone_of_a_clone_holds_the_first_source_data"
    [clone-drops-modes-and-symlinks]="filesystem::clone_binds_with_the_source_data"
    [clone-shares-source]="filesystem::writes_after_the_clone_stay_on_their_side block::writes_after_the_clone_stay_on_their_side"
    [delete-source-deletes-clones]="filesystem::deleting_the_source_leaves_the_clone_intact"
    [capacity-reported-smaller]="filesystem::clone_binds_with_the_source_data"
    [clone-unimplemented]="protection::source_carries_the_cloning_finalizer"
)

bash ci/host-state.sh >"$out/host-before.txt"
failed=0
n=0
for fault in "${!KILLS[@]}"; do
    n=$((n + 1))
    cases=()
    for id in ${KILLS[$fault]}; do cases+=("k8s_clone::$id"); done
    status=0
    lane_run "$out/$fault.log" "$bin" run -q --local-cluster --k8s-bin "$k8s_bin" \
        --profile "$profile" --work-dir "$LANE_TMP/f$n" \
        --driver-arg="--fault=$fault" --exact "${cases[@]}" \
        --junit "$out/$fault.xml" --json "$out/$fault.json" --markdown "$out/$fault.md" \
        >/dev/null || status=$?
    if ! python3 - "$out/$fault.xml" "$status" "${cases[@]}" <<'EOF'; then
import sys
import xml.etree.ElementTree as ET

junit, status, wanted = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
failed = {c.get("name") for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None}
missed = [w for w in wanted if w not in failed]
if status != 101 or missed:
    sys.exit(f"exit {status} (want 101); not killed: {missed}")
EOF
        echo "local-cluster faults: $fault did not kill what it must (log: $out/$fault.log)" >&2
        failed=1
    else
        echo "local-cluster faults: $fault killed ${#cases[@]} case(s)"
    fi
done
bash ci/host-state.sh >"$out/host-after.txt"
if ! diff -u "$out/host-before.txt" "$out/host-after.txt"; then
    echo "local-cluster faults: the host is not as it was before the runs (diff above)" >&2
    exit 1
fi
exit "$failed"
