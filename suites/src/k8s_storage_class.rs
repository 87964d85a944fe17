//! k8s_storage_class: a clone is provisioned by its own class's provisioner. A class of
//! another provisioner is never served by this driver; another class of the same driver
//! clones (external-provisioner since 3.2, as the Kubernetes docs now say).

use harness::case::{CaseResult, Requirement as R, Row, Suite, Surface, row};
use harness::context::CaseCtx;
use harness::k8s::{ClaimSpec, ExpectedEvent, VolumeMode};
use harness::profile::CloneClasses;
use kube::ResourceExt;

use crate::k8s_common::{bound_with_digest, control_clone, ensure_not_dropped, seeded_source};
use VolumeMode::Filesystem;

/// A provisioner name no driver answers to.
const OTHER_PROVISIONER: &str = "other.csi-clone-conformance.example.com";

#[derive(Clone, Copy, Debug)]
enum Flow {
    OtherProvisioner,
    SameDriverOtherClass,
}

const CLASS_PROVISIONER: &str = "k8s: a claim is provisioned by the provisioner of its StorageClass, and only by it (Kubernetes docs, Storage Classes / Dynamic provisioning)";
const OTHER_CLASS: &str = "k8s: a clone may be of another StorageClass of the same driver (Kubernetes docs, CSI Volume Cloning; external-provisioner >= 3.2), unless the profile declares clone_classes: same-class";

const ROWS: &[Row<Flow>] = &[
    row(
        "other_provisioner::clone_in_a_class_of_another_provisioner_is_not_provisioned",
        CLASS_PROVISIONER,
        &[R::Clone, R::Mount],
        Flow::OtherProvisioner,
    ),
    row(
        "same_driver::clone_in_another_class_of_the_same_driver_clones",
        OTHER_CLASS,
        &[R::Clone, R::Mount],
        Flow::SameDriverOtherClass,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("k8s_storage_class", ROWS, interpret).on(Surface::Kubernetes)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let source = seeded_source(&ctx, Filesystem).await?;
    match row.flow {
        Flow::OtherProvisioner => {
            let class = ctx.create_class(Some(OTHER_PROVISIONER)).await?;
            let spec = ClaimSpec::new("clone", Filesystem, source.size)
                .cloning(&source.name)
                .in_class(&class);
            let name = ctx.create_claim(&spec).await?.name_any();
            let waiting = ExpectedEvent {
                reason: "ExternalProvisioning",
                words: &[OTHER_PROVISIONER],
            };
            ctx.wait_claim_event(&name, waiting).await?;
            // By the time a clone this driver should make has bound, it has had its chance.
            control_clone(&ctx, &source).await?;
            ctx.ensure_unprovisioned(&name).await
        }
        Flow::SameDriverOtherClass => {
            let class = ctx.create_class(None).await?;
            let spec = ClaimSpec::new("clone", Filesystem, source.size)
                .cloning(&source.name)
                .in_class(&class);
            match ctx.profile().kubernetes.clone_classes {
                CloneClasses::SameDriver => {
                    let (bound, digest) = bound_with_digest(&ctx, &spec, source.size).await?;
                    ctx.trace("k8s: this stack clones across classes of one driver (clone_classes: same-driver, as the profile declares)");
                    ensure_not_dropped(&digest, &source, &bound.claim.name_any())
                }
                CloneClasses::SameClass => {
                    // The profile declares that the stack refuses; how it says so is its own.
                    let name = ctx.create_claim(&spec).await?.name_any();
                    let failed = ExpectedEvent {
                        reason: "ProvisioningFailed",
                        words: &[],
                    };
                    ctx.wait_claim_event(&name, failed).await?;
                    control_clone(&ctx, &source).await?;
                    ctx.ensure_unprovisioned(&name).await?;
                    ctx.trace("k8s: this stack clones only within the source's class (clone_classes: same-class, as the profile declares)");
                    Ok(())
                }
            }
        }
    }
}
