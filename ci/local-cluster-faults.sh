#!/usr/bin/env bash
# Proof that the Kubernetes cases can fail: the local cluster runs the reference driver with a
# deliberate fault (reference-driver --fault), and each case listed for the fault must fail
# (exit 101, the case a failure in the JUnit). Every k8s case is listed under at least one
# fault, or in docs/mutation-matrix.md as enforced upstream with its positive control named. The host is compared before and after, as in the clean lane. Each run's work dir
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

# fault -> the cases it must kill. Cases no driver fault can kill (refusals and drops made by
# external-provisioner or the API server) are listed in docs/mutation-matrix.md with the
# positive control that is killed here instead.
declare -A KILLS=(
    [clone-empty]="k8s_clone::filesystem::clone_binds_with_the_source_data k8s_clone::block::clone_binds_with_the_source_data k8s_clone::filesystem::clone_of_a_clone_holds_the_first_source_data
        k8s_volume_mode::refused::block_clone_of_a_filesystem_source k8s_volume_mode::refused::filesystem_clone_of_a_block_source
        k8s_volume_mode::default_mode::clone_without_volume_mode_of_a_filesystem_source_clones k8s_volume_mode::default_mode::filesystem_clone_of_a_source_without_volume_mode_clones
        k8s_size::smaller::clone_smaller_than_the_source_is_refused k8s_size::expanded::clone_expanded_later_grows_and_keeps_its_data
        k8s_data_source::missing::claim_that_does_not_exist_is_not_cloned k8s_data_source::rejected::data_source_ref_of_kind_config_map
        k8s_data_source::populator::data_source_ref_of_an_unknown_kind_is_left_to_a_populator k8s_data_source::ref::data_source_ref_to_a_claim_clones
        k8s_namespace::same_namespace::claim_of_another_namespace_is_not_found
        k8s_storage_class::other_provisioner::clone_in_a_class_of_another_provisioner_is_not_provisioned k8s_storage_class::same_driver::clone_in_another_class_of_the_same_driver_clones
        k8s_source::deleting::clone_of_a_source_being_deleted_is_refused
        k8s_snapshot::restore::filesystem_restore_has_the_source_data k8s_snapshot::restore::block_restore_has_the_source_data
        k8s_snapshot::chain::clone_of_a_restore_has_the_source_data k8s_snapshot::chain::restore_of_a_snapshot_of_a_clone_has_the_source_data
        k8s_snapshot::volume_mode::block_restore_of_a_filesystem_snapshot_is_refused
        k8s_concurrency::clones::parallel_clones_of_one_source_each_hold_its_data"
    [delete-volume-deletes-snapshots]="k8s_snapshot::lifetime::snapshot_is_restorable_after_its_source_is_deleted"
    [clone-drops-modes-and-symlinks]="k8s_clone::filesystem::clone_binds_with_the_source_data"
    [clone-copies-like-cp-r]="k8s_clone::filesystem::clone_binds_with_the_source_data"
    [clone-reowns-files]="k8s_clone::filesystem::clone_binds_with_the_source_data"
    [clone-shares-source]="k8s_clone::filesystem::writes_after_the_clone_stay_on_their_side k8s_clone::block::writes_after_the_clone_stay_on_their_side"
    [delete-source-deletes-clones]="k8s_clone::filesystem::deleting_the_source_leaves_the_clone_intact"
    [capacity-reported-smaller]="k8s_clone::filesystem::clone_binds_with_the_source_data"
    [clone-unimplemented]="k8s_clone::protection::source_carries_the_cloning_finalizer k8s_source::pending::clone_of_a_pending_source_waits_and_binds_after_it"
    [larger-clone-not-grown]="k8s_size::larger::filesystem_clone_has_a_larger_filesystem k8s_size::larger::block_clone_has_a_larger_device"
    [expand-does-not-grow]="k8s_size::expanded::clone_expanded_later_grows_and_keeps_its_data"
    [larger-clone-garbage-tail]="k8s_size::larger::block_clone_has_a_larger_device"
)

bash ci/host-state.sh >"$out/host-before.txt"
failed=0
n=0
for fault in "${!KILLS[@]}"; do
    n=$((n + 1))
    cases=()
    for id in ${KILLS[$fault]}; do cases+=("$id"); done
    status=0
    lane_run "$out/$fault.log" "$bin" run -q --local-cluster --k8s-bin "$k8s_bin" \
        --profile "$profile" --work-dir "$LANE_TMP/f$n" \
        --driver-arg="--fault=$fault" --parallel-clones 3 --exact "${cases[@]}" \
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
