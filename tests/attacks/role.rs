//! The backend role: dpgate must not serve through a role that could do
//! more than read the declared tables, since any path from analyst SQL to
//! that role would then reach the server's files or change the data.

use std::process::{Command, Stdio};

use crate::common::*;

/// Runs `dpgate serve` with `toml` until it is ready (then stops it) or
/// exits; returns whether it exited by itself, and what it logged.
fn try_serve(dir: &std::path::Path, toml: &str) -> (bool, String) {
    use std::io::BufRead;
    std::fs::write(dir.join("proxy.toml"), toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["serve", "--config"])
        .arg(dir.join("proxy.toml"))
        .env("DPGATE_TEST_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("dpgate is ready") {
                    let _ = child.kill();
                    let _ = child.wait();
                    return (false, log);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                return (true, log);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "neither ready nor exited: {log}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_backend_role_that_can_do_more_than_read() {
    let (db, _) = visits_database("role", 50).await;
    let admin = connect_direct(&cluster().url(&db)).await;
    admin
        .batch_execute(
            "CREATE ROLE role_writer LOGIN; GRANT SELECT, INSERT ON visits TO role_writer;
             CREATE ROLE role_files LOGIN; GRANT SELECT ON visits TO role_files; GRANT pg_read_server_files TO role_files;",
        )
        .await
        .unwrap();
    let dir = tempdir();
    let plain = proxy_toml(&db, free_port(), &dir.path().join("l.sqlite"), 1.0, 0.1);
    let as_role = |role: &str| plain.replace(&format!("{READER}@"), &format!("{role}@"));
    for (role, why) in [
        ("postgres", "is a superuser"),
        (
            "role_writer",
            "may write the declared table \"public\".\"visits\"",
        ),
        ("role_files", "may read the server's files"),
    ] {
        let (exited, stderr) = try_serve(dir.path(), &as_role(role));
        assert!(exited, "dpgate served through {role}: {stderr}");
        assert!(stderr.contains(why), "{role}: {stderr}");
        assert!(stderr.contains("allow_privileged_role"), "{stderr}");
    }
    // The explicit override serves, and says so loudly.
    let overridden =
        as_role("postgres").replace("[ledger]", "allow_privileged_role = true\n[ledger]");
    let (exited, stderr) = try_serve(dir.path(), &overridden);
    assert!(!exited, "the override did not serve: {stderr}");
    assert!(
        stderr.contains("UNSAFE") && stderr.contains("is a superuser"),
        "{stderr}"
    );
    // The plain read-only role serves without a word about it.
    let (exited, stderr) = try_serve(dir.path(), &plain);
    assert!(!exited, "{stderr}");
    assert!(!stderr.contains("UNSAFE"), "{stderr}");
}
