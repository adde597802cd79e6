//! The private catalog cluster leaves nothing behind when dpgate is killed.
//!
//! A child process (this test binary, re-run) starts a `Cluster` and is then
//! killed with SIGKILL, so no destructor runs: only the watchdog can stop
//! the postmaster and delete the directory. A directory left behind costs
//! about 40 MB of disk per start, which filled CI's disk before.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = "DPGATE_CLUSTER_CLEANUP_CHILD";

#[test]
fn killed_owner_leaves_no_cluster_behind() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start, say where, and wait to be killed.
        let cluster = dpgate_catalog::Cluster::start(None).expect("cluster starts");
        println!("DIR {}", cluster.directory().display());
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_owner_leaves_no_cluster_behind",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let dir = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("DIR ").map(PathBuf::from))
        .expect("the child reports its cluster directory");
    assert!(
        dir.join("data").is_dir(),
        "{} holds the cluster",
        dir.display()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !dir.exists(),
        "{} is still there 20 s after its owner was killed",
        dir.display()
    );
}
