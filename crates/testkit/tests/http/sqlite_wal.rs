//! SQLite's write-ahead log stays bounded under sustained reads and writes: readers that always hold a
//! snapshot keep PASSIVE checkpoints from ever letting the log start over, so after a commit that leaves
//! it past `storage.sqlite_wal_limit_mib` the log is made to start over (RESTART). (The ten-minute figure is
//! `scripts/bench --mixed 600`; this is the same property on a small limit.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secureflows_core::Plan;
use secureflows_testkit::{Backend, TestApp, TestOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_bounded_under_reads_and_writes() {
    let options = TestOptions {
        configure: Arc::new(|c| c.storage.sqlite_wal_limit_mib = 1),
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options).await;
    let ws = app.workspace(Plan::pro()).await;
    let application = app.application(ws, "web").await;
    let mut sessions = Vec::new();
    for i in 0..16 {
        sessions.push(app.sign_in(&application, &format!("user-{i}")).await);
    }
    let value = vec![b'v'; 8 * 1024];
    for s in &sessions {
        s.set("k0", "application/octet-stream", value.clone())
            .await
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let wal = app.data_dir.join("secureflows.db-wal");
    let sampler = {
        let (stop, wal) = (stop.clone(), wal.clone());
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    // Readers that never pause.
    let readers: Vec<_> = sessions
        .iter()
        .take(6)
        .cloned()
        .map(|s| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.get("k0").await.unwrap();
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // Writers: 16 × 200 values of 8 KiB over ten keys each (about 25 MiB of values, several times
    // that in log frames).
    let writers: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|s| {
            let value = value.clone();
            tokio::spawn(async move {
                for n in 0..200 {
                    s.set(&format!("k{}", n % 10), "application/octet-stream", value.clone())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    let peak = sampler.await.unwrap();
    assert!(reads > 100, "the readers kept reading ({reads} reads)");
    // A limit of 1 MiB, checked by the writer after every commit: the log may pass it by one batch
    // (here at most 16 writes of an 8 KiB value and the pages they touch, well under 1 MiB).
    assert!(
        peak < 2 * 1024 * 1024,
        "the write-ahead log reached {} KiB",
        peak / 1024
    );
    app.stop().await;
}
