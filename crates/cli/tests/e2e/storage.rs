//! The store under stress: a full disk is a clear 507 (in the API and the CLI) and the
//! server recovers by itself once space is freed; concurrent writes never fail as "locked".

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::future::join_all;
use serde_json::json;

use crate::harness::{TestServer, cli_home, eventually, run_cli};

/// A small tmpfs, unmounted when dropped (lazily, so that a server still holding files
/// cannot keep it mounted).
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason printed) where mounting is not possible: not root, or no
    /// permission to mount in this container.
    fn mount(size: &str) -> Option<Self> {
        let uid = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        if uid.ok() != Some(0) {
            println!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { path, _dir: dir }),
            Ok(out) => {
                println!(
                    "skipped: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Writes `path` until the disk says it is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write_all(&chunk).and_then(|()| file.flush()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // What is left is less than a chunk; take it too.
    while file.write_all(&[0u8]).is_ok() {}
}

async fn create_token(server: &TestServer) -> (u16, serde_json::Value) {
    server
        .admin_post("/api/v1/tokens", json!({"ttl_secs": 60, "uses": 1}))
        .await
}

#[tokio::test]
async fn a_full_disk_is_a_clear_507_and_the_server_recovers_when_space_is_freed() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let data_dir = disk.path.join("server");
    let server = TestServer::start_with(|c| c.data_dir = data_dir).await;
    let home = cli_home(&server, "admin", &server.admin_password.clone()).await;
    let filler = disk.path.join("filler");
    fill(&filler);

    // SQLite writes into space it already holds for as long as it can; one write soon
    // needs more.
    let mut refused = None;
    for _ in 0..5000 {
        let (status, body) = create_token(&server).await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("every write succeeded on a full disk");
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"], "storage_full");
    assert_eq!(body["message"], "the server's storage is full");
    // Reads still work, and the CLI says what the server said.
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/v1/tokens",
            Some(&server.admin_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (ok, _, err) = run_cli(
        home.path(),
        &["tokens", "create", "--ttl", "10m", "--uses", "1"],
        None,
    )
    .await;
    assert!(!ok);
    assert!(err.contains("the server's storage is full"), "{err}");

    std::fs::remove_file(&filler).unwrap();
    eventually("writes to work again once space is freed", || async {
        (create_token(&server).await.0 == 200).then_some(())
    })
    .await;
    drop(server);
}

#[tokio::test]
async fn revokes_racing_creates_never_fail() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for _ in 0..160 {
        let (status, body) = create_token(&server).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let server = &server;
    let revokes = ids.iter().map(|id| async move {
        let path = format!("/api/v1/tokens/{id}");
        server
            .call(
                reqwest::Method::DELETE,
                &path,
                Some(&server.admin_token),
                None,
            )
            .await
    });
    let creates = (0..160).map(|_| create_token(server));
    let (revoked, created) = futures::join!(join_all(revokes), join_all(creates));
    for (status, body) in revoked.iter().chain(created.iter()) {
        assert_eq!(*status, 200, "{body}");
    }
}
