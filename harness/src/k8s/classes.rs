//! The StorageClass and VolumeSnapshotClass a run uses: an existing one named by the profile
//! (checked, never changed), one from a manifest file, or one the run creates; created classes
//! carry the run label, are recorded in the ledger and removed at the end.

use std::collections::BTreeMap;

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};

use super::{Binding, KubeKind, KubeRef, RUN_LABEL, describe_kube_error, snapshot_resource};
use crate::case::{CaseResult, harness_error};
use crate::context::CaseCtx;
use crate::ledger::{Ledger, Resource};
use crate::profile::{ClassSource, DriverProfile, SnapshotClassSpec, StorageClassSpec};

/// The ledger owner of run-wide objects (removed by the final cleanup, after every case).
pub const RUN_OWNER: usize = usize::MAX;

/// The classes in use, resolved before any case runs.
#[derive(Clone, Debug)]
pub struct Classes {
    pub storage_class: String,
    pub binding: Binding,
    /// `None` when the profile declares no snapshot support.
    pub snapshot_class: Option<String>,
}

/// Resolves (and where needed creates) the run's classes; `Err` lists what is wrong.
pub async fn resolve_classes(
    client: &Client,
    profile: &DriverProfile,
    run_tag: &str,
    ledger: &Ledger,
) -> Result<Classes, String> {
    let (storage_class, binding) = storage_class(client, profile, run_tag, ledger).await?;
    let snapshot_class = if profile.capabilities.snapshot {
        Some(snapshot_class(client, profile, run_tag, ledger).await?)
    } else {
        None
    };
    Ok(Classes {
        storage_class,
        binding,
        snapshot_class,
    })
}

async fn storage_class(
    client: &Client,
    profile: &DriverProfile,
    run_tag: &str,
    ledger: &Ledger,
) -> Result<(String, Binding), String> {
    let api: Api<StorageClass> = Api::all(client.clone());
    let spec = match &profile.kubernetes.storage_class {
        ClassSource::Existing(name) => {
            let class = api
                .get_opt(name)
                .await
                .map_err(|e| format!("get StorageClass {name}: {}", describe_kube_error(&e)))?
                .ok_or_else(|| {
                    format!("StorageClass {name} (named by the profile) does not exist")
                })?;
            if class.provisioner != profile.name {
                return Err(format!(
                    "StorageClass {name} is served by {:?}, not by the driver under test {:?}",
                    class.provisioner, profile.name
                ));
            }
            return Ok((
                name.clone(),
                binding_of(class.volume_binding_mode.as_deref()),
            ));
        }
        ClassSource::File(spec) => spec.clone(),
        ClassSource::Created => created_spec(profile),
    };
    let name = format!("csiclone-{run_tag}");
    let class = StorageClass {
        metadata: labelled(&name, run_tag),
        provisioner: spec.provisioner.clone(),
        parameters: (!spec.parameters.is_empty()).then(|| spec.parameters.clone()),
        mount_options: (!spec.mount_options.is_empty()).then(|| spec.mount_options.clone()),
        // Expansion cases need it; a class that refuses expansion is the profile's to declare.
        allow_volume_expansion: Some(spec.allow_volume_expansion.unwrap_or(true)),
        reclaim_policy: Some(
            spec.reclaim_policy
                .clone()
                .unwrap_or_else(|| "Delete".into()),
        ),
        volume_binding_mode: Some(
            spec.volume_binding_mode
                .clone()
                .unwrap_or_else(|| "Immediate".into()),
        ),
        ..StorageClass::default()
    };
    let created = api
        .create(&PostParams::default(), &class)
        .await
        .map_err(|e| format!("create StorageClass {name}: {}", describe_kube_error(&e)))?;
    record(ledger, KubeKind::StorageClass, &created.metadata);
    Ok((name, binding_of(class.volume_binding_mode.as_deref())))
}

/// The class a run makes when the profile names none: the driver with the profile's parameters.
fn created_spec(profile: &DriverProfile) -> StorageClassSpec {
    let mut parameters = profile.parameters.clone();
    if let Some(fs) = &profile.fs_type {
        parameters.insert("csi.storage.k8s.io/fstype".into(), fs.clone());
    }
    StorageClassSpec {
        origin: "created by the run".into(),
        provisioner: profile.name.clone(),
        parameters,
        mount_options: Vec::new(),
        allow_volume_expansion: None,
        volume_binding_mode: None,
        reclaim_policy: None,
    }
}

async fn snapshot_class(
    client: &Client,
    profile: &DriverProfile,
    run_tag: &str,
    ledger: &Ledger,
) -> Result<String, String> {
    let resource = snapshot_resource("VolumeSnapshotClass", "volumesnapshotclasses");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let spec = match &profile.kubernetes.snapshot_class {
        ClassSource::Existing(name) => {
            let class = api
                .get_opt(name)
                .await
                .map_err(|e| {
                    format!(
                        "get VolumeSnapshotClass {name}: {}",
                        describe_kube_error(&e)
                    )
                })?
                .ok_or_else(|| {
                    format!("VolumeSnapshotClass {name} (named by the profile) does not exist")
                })?;
            let driver = class
                .data
                .get("driver")
                .and_then(|d| d.as_str())
                .unwrap_or_default();
            if driver != profile.name {
                return Err(format!(
                    "VolumeSnapshotClass {name} is served by {driver:?}, not by the driver under test {:?}",
                    profile.name
                ));
            }
            return Ok(name.clone());
        }
        ClassSource::File(spec) => spec.clone(),
        ClassSource::Created => SnapshotClassSpec {
            origin: "created by the run".into(),
            driver: profile.name.clone(),
            parameters: profile.snapshot_parameters.clone(),
            deletion_policy: None,
        },
    };
    let name = format!("csiclone-{run_tag}");
    let mut object = DynamicObject::new(&name, &resource);
    object.metadata = labelled(&name, run_tag);
    object.data = serde_json::json!({
        "driver": spec.driver,
        "deletionPolicy": spec.deletion_policy.clone().unwrap_or_else(|| "Delete".into()),
        "parameters": spec.parameters,
    });
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| {
            format!(
                "create VolumeSnapshotClass {name}: {}",
                describe_kube_error(&e)
            )
        })?;
    record(ledger, KubeKind::VolumeSnapshotClass, &created.metadata);
    Ok(name)
}

impl CaseCtx {
    /// A StorageClass of this case: a copy of the run's class under a new name, served by
    /// `provisioner` when given (another driver's class), else by the same driver.
    pub async fn create_class(&self, provisioner: Option<&str>) -> CaseResult<String> {
        self.create_class_binding(provisioner, None).await
    }

    /// `create_class` with another `volumeBindingMode` (`Immediate`, `WaitForFirstConsumer`).
    pub async fn create_class_binding(
        &self,
        provisioner: Option<&str>,
        binding: Option<&str>,
    ) -> CaseResult<String> {
        let cluster = self.cluster()?;
        let api: Api<StorageClass> = Api::all(cluster.client.clone());
        let run_class = self
            .api_call("get StorageClass", api.get(&cluster.storage_class))
            .await?;
        let name = self.unique_name("sc");
        let class = StorageClass {
            metadata: labelled(&name, &self.settings().run_tag),
            provisioner: provisioner
                .map(str::to_string)
                .unwrap_or(run_class.provisioner.clone()),
            volume_binding_mode: binding
                .map(str::to_string)
                .or(run_class.volume_binding_mode.clone()),
            ..run_class
        };
        let created = self
            .api_call(
                "create StorageClass",
                api.create(&PostParams::default(), &class),
            )
            .await?;
        if created.metadata.uid.is_none() {
            return Err(harness_error(format!(
                "StorageClass {name} came back without a uid"
            )));
        }
        self.record_kube(KubeKind::StorageClass, None, &created);
        self.trace(format!(
            "k8s: StorageClass {name} provisioner {}",
            created.provisioner
        ));
        Ok(name)
    }
}

/// Metadata of an object the run makes: its name and the run label.
pub(crate) fn labelled(name: &str, run_tag: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            RUN_LABEL.to_string(),
            run_tag.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn record(ledger: &Ledger, kind: KubeKind, meta: &ObjectMeta) {
    ledger.record(
        RUN_OWNER,
        Resource::Kube(KubeRef {
            kind,
            namespace: None,
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }),
    );
}

fn binding_of(mode: Option<&str>) -> Binding {
    match mode {
        Some("WaitForFirstConsumer") => Binding::WaitForFirstConsumer,
        _ => Binding::Immediate,
    }
}
