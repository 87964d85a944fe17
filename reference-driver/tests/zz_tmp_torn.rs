mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
#[tokio::test(flavor = "multi_thread")]
async fn torn() {
    let h = Harness::with_args(&["--copy-pace-ms", "100"]).await;
    let cap = mount_cap("ext4");
    let src = h.create_ok(req("src", cap.clone(), 128 * MIB, None)).await;
    let p = h.publish(&src.volume_id, &cap).await;
    // make the image dense-ish so the copy has many chunks
    write_tree(&p.target, 1);
    for i in 0..8 {
        std::fs::write(
            p.target.join(format!("fill{i}")),
            random_bytes(
                &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(i),
                10 << 20,
            ),
        )
        .unwrap();
    }
    rustix::fs::syncfs(std::fs::File::open(&p.target).unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let stop = stop.clone();
        let root = p.target.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let d = root.join(format!("d{}", i % 50));
                let _ = std::fs::create_dir(&d);
                std::fs::write(d.join(format!("f{i}")), vec![i as u8; 64 << 10]).unwrap();
                if i % 3 == 0 {
                    let _ = std::fs::remove_file(d.join(format!("f{}", i.saturating_sub(2))));
                }
                if i % 7 == 0 {
                    let f = std::fs::File::open(&root).unwrap();
                    rustix::fs::syncfs(&f).unwrap();
                }
                std::fs::write(
                    root.join(format!("fill{}", i % 8)),
                    vec![(i % 251) as u8; 1 << 20],
                )
                .unwrap();
                i += 1;
            }
            i
        })
    };
    let clone = h
        .create_ok(req("clone", cap.clone(), 0, vol_src(&src.volume_id)))
        .await;
    stop.store(true, Ordering::Relaxed);
    println!("writer ops {}", t.join().unwrap());
    h.unpublish(&p).await;
    let img = h.state_dir.join(format!("volumes/{}.img", clone.volume_id));
    let r = h.try_publish(&clone.volume_id, &cap).await;
    match r {
        Ok(p) => {
            let m = read_tree(&p.target);
            println!("entries {}", m.len());
            h.unpublish(&p).await;
        }
        Err(s) => println!("publish failed {s:?}"),
    }
    let out = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&img)
        .output()
        .unwrap();
    println!(
        "e2fsck exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}
