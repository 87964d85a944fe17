//! The measured scenario bodies, and the incompressible, non-dedupable data they write.

use std::os::unix::fs::FileExt;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::host::sha256;
use crate::report::Outcome;
use crate::volumes::{Session, create_request};
use crate::{GIB, MIB};

pub async fn fs_dense(s: &mut Session, reps: usize) -> Result<Outcome> {
    let size = GIB;
    let (src, data_bytes, src_hash) = dense_mount_source(s, size, 1000 * MIB).await?;
    let (clones, times) = s.clone_sequentially(&src, size, false, reps).await?;
    let hash = s.hash_mount_file(&clones[0]).await?;
    ensure!(hash == src_hash, "clone differs: {hash} != {src_hash}");
    let outcome = s.outcome(&src, &clones[0], size, data_bytes, "sha256 1/1 equal");
    Ok(outcome.timed(&times, None))
}

pub async fn block_sparse(s: &mut Session, reps: usize) -> Result<Outcome> {
    let (size, writes) = (10 * GIB, 100);
    let src = s.create("src", size, true, None).await?.0;
    let device = s.attach(&src, true).await?;
    // One random 1 MiB slot in each 1/100th of the device: scattered, distinct, and from a
    // fixed seed so runs are comparable.
    let (mut rng, stripe) = (XorShift(0x9e37_79b9_7f4a_7c15), size / MIB / writes);
    let slots: Vec<u64> = (0..writes)
        .map(|i| i * stripe + rng.next() % stripe)
        .collect();
    let mut data = random_mib(7);
    {
        let file = std::fs::OpenOptions::new().write(true).open(&device)?;
        for (n, &slot) in slots.iter().enumerate() {
            file.write_all_at(stamp(&mut data, n as u64), slot * MIB)?;
        }
        file.sync_all()?;
    } // closed before unpublish, or the unmount is busy
    s.detach(&src).await?;
    let (clones, times) = s.clone_sequentially(&src, size, true, reps).await?;
    // Compare the written slots straight from the two images (both unstaged, so flushed).
    let a = std::fs::File::open(s.image(&src))?;
    let b = std::fs::File::open(s.image(&clones[0]))?;
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for &slot in &slots {
        a.read_exact_at(&mut x, slot * MIB)?;
        b.read_exact_at(&mut y, slot * MIB)?;
        ensure!(x == y, "clone differs from source at MiB {slot}");
    }
    let verified = format!("{writes} written MiB equal");
    let outcome = s.outcome(&src, &clones[0], size, writes * MIB, &verified);
    Ok(outcome.timed(&times, None))
}

pub async fn concurrent(s: &mut Session, count: usize) -> Result<Outcome> {
    let size = 256 * MIB;
    let (src, data_bytes, src_hash) = dense_mount_source(s, size, size).await?;
    let wall = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            // Each task gets its own client handle on the one shared channel.
            let mut controller = s.clients.controller.clone();
            let request = create_request(&format!("clone-{i}"), size, false, Some(&src));
            tokio::spawn(async move {
                let t0 = Instant::now();
                let response = controller.create_volume(request).await?.into_inner();
                let volume = response.volume.context("CreateVolume returned no volume")?;
                anyhow::Ok((volume.volume_id, t0.elapsed()))
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    let wall = wall.elapsed();
    // Record every id made before failing on any error, so teardown deletes them all.
    let made = results.iter().filter_map(|r| r.as_ref().ok());
    s.volumes.extend(made.map(|(id, _)| id.clone()));
    let (clones, times): (Vec<_>, Vec<_>) = results.into_iter().collect::<Result<_>>()?;
    say!("  {count} concurrent clones in {:.3} s", wall.as_secs_f64());
    // Hashing all 20 would triple the scenario's run time; first, middle and last suffice.
    let picks = [0, count / 2, count - 1];
    for i in picks {
        let hash = s.hash_mount_file(&clones[i]).await?;
        ensure!(hash == src_hash, "clone #{i} differs from the source");
    }
    let verified = format!("sha256 {}/{count} equal", picks.len());
    let outcome = s.outcome(&src, &clones[0], size, data_bytes, &verified);
    Ok(outcome.timed(&times, Some(wall)))
}

/// Creates an ext4 mount volume and fills one file in it with up to `want` bytes of
/// non-repeating data (less if the filesystem has less room). Returns (id, bytes, sha256).
async fn dense_mount_source(s: &mut Session, size: u64, want: u64) -> Result<Source> {
    let src = s.create("src", size, false, None).await?.0;
    let target = s.attach(&src, false).await?;
    let stat = rustix::fs::statvfs(&target)?;
    let room = (stat.f_bavail * stat.f_frsize).saturating_sub(4 * MIB);
    let bytes = want.min(room) / MIB * MIB;
    let (t0, path) = (Instant::now(), target.join("data.bin"));
    {
        let file = std::fs::File::create(&path)?;
        let mut data = random_mib(42);
        for n in 0..bytes / MIB {
            file.write_all_at(stamp(&mut data, n), n * MIB)?;
        }
        file.sync_all()?;
    } // closed before unpublish, or the unmount is busy
    let secs = t0.elapsed().as_secs_f64();
    say!("  wrote {} MiB into the source in {secs:.1} s", bytes / MIB);
    let hash = sha256(&path)?;
    s.detach(&src).await?;
    Ok((src, bytes, hash))
}

/// (volume id, bytes written, sha256 of the data file).
type Source = (String, u64, String);

/// xorshift64*: fast and deterministic; plenty to make data incompressible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// 1 MiB of random bytes, made once per source.
fn random_mib(seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    let words = (0..MIB / 8).map(|_| rng.next().to_le_bytes());
    words.flatten().collect()
}

/// Stamps MiB number `n` into every 4 KiB block of `buf`, so no two blocks written are equal
/// (nothing can dedupe) without regenerating random data for each MiB.
fn stamp(buf: &mut [u8], n: u64) -> &[u8] {
    for (block, chunk) in buf.chunks_mut(4096).enumerate() {
        chunk[..8].copy_from_slice(&(n * 256 + block as u64).to_le_bytes());
    }
    buf
}
