//! VolumeContentSource handling at the controller: echo, missing and malformed sources,
//! replays, ALREADY_EXISTS on name reuse, and the clone showing up in listings.

use csi_proto::v1 as csi;
use harness::case::{
    CaseResult, Requirement as R, Row, Suite, ensure, ensure_eq, expect_code, expect_ok, row,
};
use harness::context::{CaseCtx, SourceRef};
use harness::profile::Ambiguous;
use tonic::Code;

use crate::common::{SourceKind, default_access, empty_source, seeded_source};

#[derive(Clone, Copy, Debug)]
enum Missing {
    /// An id of no volume at all (csi-sanity uses such literals too).
    UnknownVolume,
    UnknownSnapshot,
    /// A real volume deleted just before the clone request.
    DeletedVolume,
    DeletedSnapshot,
}

#[derive(Clone, Copy, Debug)]
enum Malformed {
    UnsetOneof,
    EmptyVolumeId,
    EmptySnapshotId,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Conflict {
    OtherVolume,
    /// A restore, then the same name with another snapshot.
    OtherSnapshot,
    SnapshotInsteadOfVolume,
    NoSource,
}

#[derive(Clone, Copy, Debug)]
enum Listing {
    ListVolumes,
    GetVolume,
}

#[derive(Clone, Copy, Debug)]
enum Flow {
    Echo(SourceKind),
    Missing(Missing),
    Malformed(Malformed),
    Replay(SourceKind),
    Conflict(Conflict),
    Listed(Listing),
    /// A refused clone, then the same name with a valid request: a full, fresh clone.
    RetryAfterRefusal,
}

const ROWS: &[Row<Flow>] = &[
    row(
        "volume::clone_echoes_volume_source",
        "spec: Volume.content_source; k8s: external-provisioner deletes a clone whose response lacks content_source",
        &[R::Clone],
        Flow::Echo(SourceKind::Volume),
    ),
    row(
        "snapshot::restore_echoes_snapshot_source",
        "spec: Volume.content_source; k8s: external-provisioner deletes a restore whose response lacks content_source",
        &[R::Snapshot],
        Flow::Echo(SourceKind::Snapshot),
    ),
    row(
        "missing::unknown_source_volume_is_not_found",
        "spec: CreateVolume errors / 5 NOT_FOUND (source volume does not exist)",
        &[R::Clone],
        Flow::Missing(Missing::UnknownVolume),
    ),
    row(
        "missing::unknown_source_snapshot_is_not_found",
        "spec: CreateVolume errors / 5 NOT_FOUND (source snapshot does not exist)",
        &[R::Snapshot],
        Flow::Missing(Missing::UnknownSnapshot),
    ),
    row(
        "missing::source_volume_deleted_just_before_is_not_found",
        "spec: CreateVolume errors / 5 NOT_FOUND (source volume does not exist)",
        &[R::Clone],
        Flow::Missing(Missing::DeletedVolume),
    ),
    row(
        "missing::source_snapshot_deleted_just_before_is_not_found",
        "spec: CreateVolume errors / 5 NOT_FOUND (source snapshot does not exist)",
        &[R::Snapshot],
        Flow::Missing(Missing::DeletedSnapshot),
    ),
    row(
        "malformed::unset_source_type_is_invalid_argument",
        "spec: VolumeContentSource one of type MUST be specified; general errors / 3 INVALID_ARGUMENT",
        &[R::Clone],
        Flow::Malformed(Malformed::UnsetOneof),
    ),
    row(
        "malformed::empty_volume_id_is_invalid_argument",
        "spec: VolumeSource.volume_id REQUIRED; general errors / 3 INVALID_ARGUMENT",
        &[R::Clone],
        Flow::Malformed(Malformed::EmptyVolumeId),
    ),
    row(
        "malformed::empty_snapshot_id_is_invalid_argument",
        "spec: SnapshotSource.snapshot_id REQUIRED; general errors / 3 INVALID_ARGUMENT",
        &[R::Snapshot],
        Flow::Malformed(Malformed::EmptySnapshotId),
    ),
    row(
        "replay::clone_replay_returns_same_volume_with_source",
        "spec: CreateVolume idempotency (same name and arguments → 0 OK, same volume); k8s: content_source on every response",
        &[R::Clone],
        Flow::Replay(SourceKind::Volume),
    ),
    row(
        "replay::restore_replay_returns_same_volume_with_source",
        "spec: CreateVolume idempotency (same name and arguments → 0 OK, same volume); k8s: content_source on every response",
        &[R::Snapshot],
        Flow::Replay(SourceKind::Snapshot),
    ),
    row(
        "conflict::same_name_other_source_volume_is_already_exists",
        "spec: CreateVolume errors / 6 ALREADY_EXISTS (incompatible volume_content_source)",
        &[R::Clone],
        Flow::Conflict(Conflict::OtherVolume),
    ),
    row(
        "conflict::same_name_other_snapshot_after_a_restore_is_already_exists",
        "spec: CreateVolume errors / 6 ALREADY_EXISTS (incompatible volume_content_source)",
        &[R::Snapshot],
        Flow::Conflict(Conflict::OtherSnapshot),
    ),
    row(
        "conflict::same_name_snapshot_instead_of_volume_is_already_exists",
        "spec: CreateVolume errors / 6 ALREADY_EXISTS (incompatible volume_content_source)",
        &[R::Clone, R::Snapshot],
        Flow::Conflict(Conflict::SnapshotInsteadOfVolume),
    ),
    row(
        "conflict::same_name_without_source_is_already_exists",
        "spec: CreateVolume errors / 6 ALREADY_EXISTS (incompatible volume_content_source); ambiguous: the idempotency sentence omits volume_content_source (advisory unless clone.ambiguous: strict)",
        &[R::Clone],
        Flow::Conflict(Conflict::NoSource),
    ),
    row(
        "listing::list_volumes_shows_the_clone",
        "spec: ListVolumes returns all available volumes",
        &[R::Clone, R::ListVolumes],
        Flow::Listed(Listing::ListVolumes),
    ),
    row(
        "listing::controller_get_volume_shows_the_clone",
        "spec: ControllerGetVolume returns the volume",
        &[R::Clone, R::GetVolume],
        Flow::Listed(Listing::GetVolume),
    ),
    row(
        "retry::same_name_after_a_refused_clone_makes_the_full_clone",
        "spec: CreateVolume — a failed call creates nothing; k8s: external-provisioner retries the same name until it succeeds",
        &[R::Clone, R::DataPlane],
        Flow::RetryAfterRefusal,
    ),
];

pub fn suite() -> Suite {
    Suite::from_rows("content_source", ROWS, interpret)
}

async fn interpret(ctx: CaseCtx, row: Row<Flow>) -> CaseResult {
    let access = default_access(&ctx);
    let size = ctx.volume_size();
    match row.flow {
        Flow::Echo(kind) => {
            let (source, size) = empty_source(&ctx, kind, access).await?;
            let clone = expect_ok(
                ctx.create_from(&source, access, Some((size, 0))).await,
                "CreateVolume with a content source",
            )?;
            ensure_eq(
                &SourceRef::from_proto(clone.content_source.as_ref()),
                &Some(source.clone()),
                "the response must echo content_source with the same kind and id",
            )?;
            ensure(
                SourceRef::Volume(clone.volume_id.clone()) != source,
                "the new volume must have its own id",
                "an id other than the source's",
                clone.volume_id.clone(),
            )?;
            ensure(
                clone.capacity_bytes == 0 || clone.capacity_bytes as u64 >= size,
                "capacity_bytes must be at least required_bytes (or 0 for unknown)",
                format!(">= {size}"),
                clone.capacity_bytes.to_string(),
            )
        }
        Flow::Missing(missing) => {
            let source = match missing {
                Missing::UnknownVolume => SourceRef::Volume(format!(
                    "csiclone-no-such-volume-{}",
                    ctx.settings().run_tag
                )),
                Missing::UnknownSnapshot => SourceRef::Snapshot(format!(
                    "csiclone-no-such-snapshot-{}",
                    ctx.settings().run_tag
                )),
                Missing::DeletedVolume => {
                    let volume = ctx.new_volume(access, None).await?;
                    expect_ok(
                        ctx.delete_volume(&volume.volume_id).await,
                        "setup: DeleteVolume of the source",
                    )?;
                    SourceRef::Volume(volume.volume_id)
                }
                Missing::DeletedSnapshot => {
                    let (source, _) = empty_source(&ctx, SourceKind::Snapshot, access).await?;
                    let SourceRef::Snapshot(id) = &source else {
                        unreachable!()
                    };
                    expect_ok(
                        ctx.delete_snapshot(id).await,
                        "setup: DeleteSnapshot of the source",
                    )?;
                    source
                }
            };
            expect_code(
                ctx.create_from(&source, access, Some((size, 0))).await,
                Code::NotFound,
                "CreateVolume from a missing source",
            )
        }
        Flow::Malformed(malformed) => {
            let name = ctx.unique_name("malformed");
            let mut request = ctx.volume_request(&name, access, Some((size, 0)), None);
            use csi::volume_content_source::{SnapshotSource, Type, VolumeSource};
            let r#type = match malformed {
                Malformed::UnsetOneof => None,
                Malformed::EmptyVolumeId => Some(Type::Volume(VolumeSource {
                    volume_id: String::new(),
                })),
                Malformed::EmptySnapshotId => Some(Type::Snapshot(SnapshotSource {
                    snapshot_id: String::new(),
                })),
            };
            request.volume_content_source = Some(csi::VolumeContentSource { r#type });
            expect_code(
                ctx.create_volume(request).await,
                Code::InvalidArgument,
                "CreateVolume with a malformed content source",
            )
        }
        Flow::Replay(kind) => {
            let (source, size) = empty_source(&ctx, kind, access).await?;
            let name = ctx.unique_name("replay");
            let request = ctx.volume_request(&name, access, Some((size, 0)), Some(&source));
            let first = expect_ok(
                ctx.create_volume(request.clone()).await,
                "CreateVolume with a content source",
            )?;
            let second = expect_ok(
                ctx.create_volume(request).await,
                "the same CreateVolume again",
            )?;
            ensure_eq(
                &second.volume_id,
                &first.volume_id,
                "a replay must return the same volume",
            )?;
            ensure_eq(
                &second.capacity_bytes,
                &first.capacity_bytes,
                "a replay must report the same capacity_bytes (spec: OK with the corresponding response)",
            )?;
            ensure_eq(
                &sorted(&second.volume_context),
                &sorted(&first.volume_context),
                "a replay must return the same volume_context (the CO passes it to every later call)",
            )?;
            ensure_eq(
                &SourceRef::from_proto(second.content_source.as_ref()),
                &Some(source),
                "a replay must echo content_source like the first answer",
            )
        }
        Flow::Conflict(conflict) => {
            let first_kind = match conflict {
                Conflict::OtherSnapshot => SourceKind::Snapshot,
                _ => SourceKind::Volume,
            };
            let (source, size) = empty_source(&ctx, first_kind, access).await?;
            let name = ctx.unique_name("conflict");
            let request = ctx.volume_request(&name, access, Some((size, 0)), Some(&source));
            let first = expect_ok(
                ctx.create_volume(request).await,
                "CreateVolume of the first copy",
            )?;
            let other = match conflict {
                Conflict::OtherVolume => {
                    Some(empty_source(&ctx, SourceKind::Volume, access).await?.0)
                }
                Conflict::OtherSnapshot => {
                    Some(empty_source(&ctx, SourceKind::Snapshot, access).await?.0)
                }
                Conflict::SnapshotInsteadOfVolume => {
                    let SourceRef::Volume(id) = &source else {
                        unreachable!()
                    };
                    let snapshot = expect_ok(
                        ctx.create_snapshot(&ctx.unique_name("snap"), id).await,
                        "setup: CreateSnapshot",
                    )?;
                    Some(SourceRef::Snapshot(snapshot.snapshot_id))
                }
                Conflict::NoSource => None,
            };
            let again = ctx.volume_request(&name, access, Some((size, 0)), other.as_ref());
            let answer = ctx.create_volume(again).await;
            if conflict == Conflict::NoSource
                && let Some(note) = ambiguous_sourceless_replay(&ctx, &answer, &first)
            {
                ctx.advise(note);
                return Ok(());
            }
            expect_code(
                answer,
                Code::AlreadyExists,
                "CreateVolume reusing the name with another source",
            )
        }
        Flow::Listed(listing) => {
            let (source, size) = empty_source(&ctx, SourceKind::Volume, access).await?;
            let clone = expect_ok(
                ctx.create_from(&source, access, Some((size, 0))).await,
                "CreateVolume from a volume",
            )?;
            let shown = match listing {
                Listing::ListVolumes => {
                    let volumes = expect_ok(ctx.list_volumes().await, "ListVolumes")?;
                    let ids: Vec<&str> = volumes.iter().map(|v| v.volume_id.as_str()).collect();
                    volumes
                        .iter()
                        .find(|v| v.volume_id == clone.volume_id)
                        .cloned()
                        .ok_or_else(|| {
                            harness::case::fail_with(
                                "ListVolumes must include the clone",
                                clone.volume_id.clone(),
                                format!("{ids:?}"),
                            )
                        })?
                }
                Listing::GetVolume => expect_ok(
                    ctx.get_volume(&clone.volume_id).await,
                    "ControllerGetVolume of the clone",
                )?,
            };
            ensure_eq(
                &shown.volume_id,
                &clone.volume_id,
                "the listed volume must be the clone",
            )?;
            // content_source is optional in listings; when present it must be right.
            if let Some(listed) = SourceRef::from_proto(shown.content_source.as_ref()) {
                ensure_eq(
                    &listed,
                    &source,
                    "a listed content_source must name the clone's source",
                )?;
            }
            Ok(())
        }
        Flow::RetryAfterRefusal => {
            let (source, seeded) = seeded_source(&ctx, SourceKind::Volume, access).await?;
            let name = ctx.unique_name("retry");
            // A limit below the source is the one size every plugin must refuse.
            let half = seeded.size / 2;
            let too_small = ctx.volume_request(&name, access, Some((half, half)), Some(&source));
            expect_code(
                ctx.create_volume(too_small).await,
                Code::OutOfRange,
                "CreateVolume with limit_bytes below its source",
            )?;
            let valid = ctx.volume_request(&name, access, Some((seeded.size, 0)), Some(&source));
            let clone = expect_ok(
                ctx.create_volume(valid).await,
                "the same name again with a valid size",
            )?;
            let digest = ctx.digest_of(&clone, access, seeded.size).await?;
            ensure_eq(
                &digest,
                &seeded.digest,
                "the retried clone must hold the source data",
            )
        }
    }
}

fn sorted(map: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut pairs: Vec<_> = map.iter().collect();
    pairs.sort();
    pairs
}

/// The same name without the clone's source answered OK with the clone itself: the spec's
/// idempotency sentence lists the fields that must match and leaves volume_content_source out,
/// while its ALREADY_EXISTS row includes it. Unless the profile asks for strict, that reading
/// passes with a note; any other answer (another volume, another code) is judged as usual.
fn ambiguous_sourceless_replay(
    ctx: &CaseCtx,
    answer: &Result<csi::Volume, tonic::Status>,
    first: &csi::Volume,
) -> Option<String> {
    let Ok(volume) = answer else { return None };
    (volume.volume_id == first.volume_id && ctx.profile().clone.ambiguous == Ambiguous::Advisory)
        .then(|| {
            format!(
                "the same name without the clone's source answered OK with the clone ({}); the spec's \
                 ALREADY_EXISTS row covers an incompatible volume_content_source, but its idempotency \
                 sentence does not list it. Kubernetes never sends this. Set clone.ambiguous: strict \
                 to fail it.",
                volume.volume_id
            )
        })
}
