//! Data fingerprints: seeded file trees for mount volumes, random data and SHA-256 for block
//! devices. Everything is seeded so a failure reproduces.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

use super::MIB;

// ---------- filesystem trees ----------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, len: u64, sha256: String },
    Symlink { target: PathBuf },
}

/// Relative path → what is there.
pub type Manifest = BTreeMap<String, Entry>;

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

pub fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    buf
}

/// Writes a seeded tree (small, 5 MiB random, sparse with data at 0 and 7 MiB, hidden, 0640,
/// subdirs with their own modes, symlinks incl. a dangling one), makes it durable, and returns
/// what a faithful copy must contain.
pub fn write_tree(root: &Path, seed: u64) -> Manifest {
    write_tree_with(root, seed, true)
}

/// `durable: false` leaves everything in the page cache: flushing before a copy is then the
/// driver's job (a clone of an in-use volume).
pub fn write_tree_with(root: &Path, seed: u64, durable: bool) -> Manifest {
    let sync = |path: &Path| {
        if durable {
            File::open(path).unwrap().sync_all().unwrap();
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Manifest::new();
    let put = |m: &mut Manifest, rel: &str, data: &[u8], mode: u32| {
        let path = root.join(rel);
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        sync(&path);
        m.insert(
            rel.into(),
            Entry::File {
                mode,
                len: data.len() as u64,
                sha256: sha256_hex(data),
            },
        );
    };
    for (rel, mode) in [("sub", 0o750), ("sub/deeper", 0o755)] {
        fs::create_dir(root.join(rel)).unwrap();
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
        m.insert(rel.into(), Entry::Dir { mode });
    }
    put(
        &mut m,
        "hello.txt",
        format!("hello {seed}\n").as_bytes(),
        0o644,
    );
    put(
        &mut m,
        "random.bin",
        &random_bytes(&mut rng, 5 * MIB as usize),
        0o644,
    );
    put(
        &mut m,
        "secret.txt",
        format!("secret {seed}\n").as_bytes(),
        0o640,
    );
    put(&mut m, ".hidden", &random_bytes(&mut rng, 1000), 0o600);
    put(
        &mut m,
        "sub/nested.txt",
        &random_bytes(&mut rng, 12345),
        0o600,
    );
    put(
        &mut m,
        "sub/deeper/leaf",
        &random_bytes(&mut rng, 4096),
        0o444,
    );

    // Sparse: 4 KiB at 0 and 4 KiB at 7 MiB, a hole between.
    let (head, tail) = (random_bytes(&mut rng, 4096), random_bytes(&mut rng, 4096));
    let sparse = root.join("sparse.bin");
    let f = File::create(&sparse).unwrap();
    f.write_all_at(&head, 0).unwrap();
    f.write_all_at(&tail, 7 * MIB).unwrap();
    sync(&sparse);
    let mut whole = vec![0u8; (7 * MIB + 4096) as usize];
    whole[..4096].copy_from_slice(&head);
    whole[7 * MIB as usize..].copy_from_slice(&tail);
    let mode = fs::metadata(&sparse).unwrap().permissions().mode() & 0o7777;
    m.insert(
        "sparse.bin".into(),
        Entry::File {
            mode,
            len: whole.len() as u64,
            sha256: sha256_hex(&whole),
        },
    );

    for (rel, target) in [("link", "sub/nested.txt"), ("sub/dangling", "../nowhere")] {
        symlink(target, root.join(rel)).unwrap();
        m.insert(
            rel.into(),
            Entry::Symlink {
                target: target.into(),
            },
        );
    }
    for dir in [
        root.to_path_buf(),
        root.join("sub"),
        root.join("sub/deeper"),
    ] {
        sync(&dir);
    }
    if durable {
        rustix::fs::syncfs(File::open(root).unwrap()).unwrap();
    }
    m
}

/// Reads a tree back (skipping the top-level lost+found that mkfs.ext4 makes).
pub fn read_tree(root: &Path) -> Manifest {
    fn walk(root: &Path, rel: &Path, m: &mut Manifest) {
        for entry in fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            if rel == Path::new("lost+found") {
                continue;
            }
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let key = rel.to_str().unwrap().to_string();
            if meta.file_type().is_symlink() {
                m.insert(
                    key,
                    Entry::Symlink {
                        target: fs::read_link(&path).unwrap(),
                    },
                );
            } else if meta.is_dir() {
                m.insert(key, Entry::Dir { mode });
                walk(root, &rel, m);
            } else {
                let data = fs::read(&path).unwrap();
                m.insert(
                    key,
                    Entry::File {
                        mode,
                        len: data.len() as u64,
                        sha256: sha256_hex(&data),
                    },
                );
            }
        }
    }
    let mut m = Manifest::new();
    walk(root, Path::new(""), &mut m);
    m
}

// ---------- block devices ----------

fn open_rw(dev: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .unwrap_or_else(|e| panic!("open {}: {e}", dev.display()))
}

pub fn device_size(dev: &Path) -> u64 {
    File::open(dev).unwrap().seek(SeekFrom::End(0)).unwrap()
}

/// Random data at scattered, partly unaligned offsets (first and last block included), fsynced.
pub fn write_scattered(dev: &Path, seed: u64) {
    write_scattered_with(dev, seed, true)
}

/// `durable: false` skips the fsync (the data may sit in the device's page cache).
pub fn write_scattered_with(dev: &Path, seed: u64, durable: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let f = open_rw(dev);
    let size = device_size(dev);
    let mut spots = vec![(0, 4096), (size - 4096, 4096), (size / 2 + 123, 777)];
    for _ in 0..16 {
        let len = rng.random_range(1..256 * 1024);
        spots.push((rng.random_range(0..size - len), len));
    }
    for (offset, len) in spots {
        f.write_all_at(&random_bytes(&mut rng, len as usize), offset)
            .unwrap();
    }
    if durable {
        f.sync_all().unwrap();
    }
}

/// Overwrites the whole device with seeded random data; returns its SHA-256.
pub fn fill_device(dev: &Path, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let f = open_rw(dev);
    let size = device_size(dev);
    let mut hash = Sha256::new();
    let mut offset = 0;
    while offset < size {
        let chunk = random_bytes(&mut rng, (size - offset).min(MIB) as usize);
        f.write_all_at(&chunk, offset).unwrap();
        hash.update(&chunk);
        offset += chunk.len() as u64;
    }
    f.sync_all().unwrap();
    format!("{:x}", hash.finalize())
}

/// SHA-256 of the first `len` bytes (all of them when None); panics if shorter.
pub fn digest(dev: &Path, len: Option<u64>) -> String {
    let mut f = File::open(dev).unwrap();
    let len = len.unwrap_or_else(|| device_size(dev));
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = f.read(&mut buf[..left.min(MIB) as usize]).unwrap();
        assert!(n > 0, "{} ended {left} bytes early", dev.display());
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    format!("{:x}", hash.finalize())
}

/// Writes `data` at `offset` and fsyncs.
pub fn write_at(dev: &Path, offset: u64, data: &[u8]) {
    let f = open_rw(dev);
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

pub fn read_at(dev: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(dev)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}
