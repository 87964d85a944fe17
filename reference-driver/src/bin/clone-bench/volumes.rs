//! The driver session: a running driver, its gRPC clients, and the volumes the bench made
//! through them (created, staged, published), all undone by `teardown`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume, access_mode::Mode};
use csi::volume_content_source::{Type as SourceType, VolumeSource};
use csi_proto::v1 as csi;
use reference_driver::client::{CsiClients, DriverProcess};
use reference_driver::storage::copy::reflink_supported;

use crate::host::{allocated, mounts_under, path_str, sha256};
use crate::report::Outcome;

/// A running driver plus everything the bench made through it, for teardown.
pub struct Session {
    driver: Option<DriverProcess>,
    pub clients: CsiClients,
    root: PathBuf,
    state: PathBuf,
    pub volumes: Vec<String>,
    /// (volume id, staging path, target path, published?) of staged volumes.
    attached: Vec<(String, PathBuf, PathBuf, bool)>,
}

impl Session {
    pub async fn start(driver_bin: &Path, root: &Path) -> Result<Session> {
        if root.exists() {
            // Left by an interrupted run; refuse if anything is still mounted under it.
            let mounts = mounts_under(root)?;
            ensure!(mounts.is_empty(), "clean up mounts first: {mounts:?}");
            std::fs::remove_dir_all(root)?;
        }
        let state = root.join("state");
        std::fs::create_dir_all(root.join("node"))?;
        std::fs::create_dir_all(&state)?;
        let socket = root.join("driver.sock");
        let (driver, clients) = DriverProcess::start(driver_bin, &socket, &state, &[]).await?;
        let driver = Some(driver);
        let (root, volumes, attached) = (root.to_path_buf(), Vec::new(), Vec::new());
        Ok(Session {
            driver,
            clients,
            root,
            state,
            volumes,
            attached,
        })
    }

    pub fn image(&self, id: &str) -> PathBuf {
        self.state.join("volumes").join(format!("{id}.img"))
    }

    /// The untimed part of a result: method, sizes, allocation.
    pub fn outcome(&self, src: &str, clone: &str, size: u64, data: u64, verified: &str) -> Outcome {
        let reflink = reflink_supported(&self.state);
        Outcome {
            method: (if reflink { "reflink" } else { "sparse copy" }).into(),
            volume_bytes: size,
            data_bytes: data,
            source_allocated_bytes: allocated(&self.image(src)),
            clone_allocated_bytes: allocated(&self.image(clone)),
            verified: verified.into(),
            ..Outcome::default()
        }
    }

    /// CreateVolume; returns the id and the call's latency.
    pub async fn create(
        &mut self,
        name: &str,
        size: u64,
        block: bool,
        src: Option<&str>,
    ) -> Result<(String, Duration)> {
        let request = create_request(name, size, block, src);
        let t0 = Instant::now();
        let response = self.clients.controller.create_volume(request).await;
        let took = t0.elapsed();
        let response = response.with_context(|| format!("CreateVolume {name}"))?;
        let volume = response.into_inner().volume;
        let id = volume.context("CreateVolume returned no volume")?.volume_id;
        self.volumes.push(id.clone());
        Ok((id, took))
    }

    pub async fn clone_sequentially(
        &mut self,
        src: &str,
        size: u64,
        block: bool,
        reps: usize,
    ) -> Result<(Vec<String>, Vec<Duration>)> {
        let (mut clones, mut times) = (Vec::new(), Vec::new());
        for i in 0..reps {
            let (id, took) = self
                .create(&format!("clone-{i}"), size, block, Some(src))
                .await?;
            say!("  clone {i}: {:.3} s", took.as_secs_f64());
            clones.push(id);
            times.push(took);
        }
        Ok((clones, times))
    }

    /// NodeStage + NodePublish; returns the target (a directory, or the device node file).
    pub async fn attach(&mut self, id: &str, block: bool) -> Result<PathBuf> {
        let staging = self.root.join("node").join(format!("{id}-staging"));
        let target = self.root.join("node").join(format!("{id}-target"));
        std::fs::create_dir_all(&staging)?;
        let stage = csi::NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path_str(&staging),
            volume_capability: Some(capability(block)),
            ..Default::default()
        };
        let stage = self.clients.node.node_stage_volume(stage).await;
        stage.with_context(|| format!("NodeStageVolume {id}"))?;
        let entry = (id.into(), staging.clone(), target.clone(), false);
        self.attached.push(entry);
        let publish = csi::NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: path_str(&staging),
            target_path: path_str(&target),
            volume_capability: Some(capability(block)),
            ..Default::default()
        };
        let publish = self.clients.node.node_publish_volume(publish).await;
        publish.with_context(|| format!("NodePublishVolume {id}"))?;
        self.attached.last_mut().expect("just pushed").3 = true;
        Ok(target)
    }

    /// NodeUnpublish + NodeUnstage of a volume staged by `attach`; forgotten only on success.
    pub async fn detach(&mut self, id: &str) -> Result<()> {
        let at = self.attached.iter().position(|a| a.0 == id);
        let at = at.context("not attached")?;
        let (volume_id, staging, target, published) = self.attached[at].clone();
        if published {
            let (volume_id, target_path) = (volume_id.clone(), path_str(&target));
            let request = csi::NodeUnpublishVolumeRequest {
                volume_id,
                target_path,
            };
            let done = self.clients.node.node_unpublish_volume(request).await;
            done.with_context(|| format!("NodeUnpublishVolume {id}"))?;
            self.attached[at].3 = false;
        }
        let staging_target_path = path_str(&staging);
        let request = csi::NodeUnstageVolumeRequest {
            volume_id,
            staging_target_path,
        };
        let done = self.clients.node.node_unstage_volume(request).await;
        done.with_context(|| format!("NodeUnstageVolume {id}"))?;
        self.attached.remove(at);
        let _ = std::fs::remove_dir(&staging);
        Ok(())
    }

    pub async fn hash_mount_file(&mut self, id: &str) -> Result<String> {
        let target = self.attach(id, false).await?;
        let hash = sha256(&target.join("data.bin"));
        self.detach(id).await?;
        hash
    }

    /// Detaches and deletes everything, stops the driver, removes the scenario dir.
    pub async fn teardown(mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some(id) = self.attached.last().map(|a| a.0.clone()) {
            if let Err(e) = self.detach(&id).await {
                errors.push(format!("{e:#}"));
                self.attached.retain(|a| a.0 != id); // the body had its try; give up
            }
        }
        for volume_id in self.volumes.drain(..).rev() {
            let request = csi::DeleteVolumeRequest {
                volume_id,
                ..Default::default()
            };
            if let Err(e) = self.clients.controller.delete_volume(request).await {
                errors.push(format!("DeleteVolume: {e}"));
            }
        }
        if let Some(driver) = self.driver.take() {
            driver.stop()?;
        }
        ensure!(errors.is_empty(), "teardown: {}", errors.join("; "));
        // Only the socket and empty dirs remain; keep them if anything is still mounted.
        if mounts_under(&self.root)?.is_empty() {
            std::fs::remove_dir_all(&self.root)?;
        }
        Ok(())
    }
}

fn capability(block: bool) -> csi::VolumeCapability {
    let mode = Mode::SingleNodeWriter as i32;
    let fs_type = "ext4".to_string();
    let access_type = match block {
        true => AccessType::Block(BlockVolume {}),
        false => AccessType::Mount(MountVolume {
            fs_type,
            ..Default::default()
        }),
    };
    let access_mode = Some(AccessMode { mode });
    csi::VolumeCapability {
        access_mode,
        access_type: Some(access_type),
    }
}

pub fn create_request(
    name: &str,
    size: u64,
    block: bool,
    src: Option<&str>,
) -> csi::CreateVolumeRequest {
    let volume = |volume_id| Some(SourceType::Volume(VolumeSource { volume_id }));
    let source = src.map(|id| csi::VolumeContentSource {
        r#type: volume(id.into()),
    });
    let range = csi::CapacityRange {
        required_bytes: size as i64,
        limit_bytes: 0,
    };
    csi::CreateVolumeRequest {
        name: format!("bench-{name}"),
        capacity_range: Some(range),
        volume_capabilities: vec![capability(block)],
        volume_content_source: source,
        ..Default::default()
    }
}
