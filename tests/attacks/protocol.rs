//! Protocol: malformed frames, junk before and after login, and clients
//! that connect and never log in. None may take down the server, a
//! connection slot or another analyst's session.

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

pub(crate) async fn message(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Option<backend::Message> {
    loop {
        if let Ok(Some(m)) = backend::Message::parse(buf) {
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Logs in with SCRAM over a raw socket; the socket is then ready for query.
pub(crate) async fn raw_login(port: u16) -> TcpStream {
    raw_login_with_pid(port).await.0
}

/// [`raw_login`], with the process id BackendKeyData gave the connection.
async fn raw_login_with_pid(port: u16) -> (TcpStream, i32) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", "analyst"), ("database", "x")], &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut scram = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    let mut pid = 0;
    loop {
        out.clear();
        match message(&mut stream, &mut buf).await.expect("login") {
            backend::Message::AuthenticationSasl(_) => {
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap()
            }
            backend::Message::AuthenticationSaslContinue(b) => {
                scram.update(b.data()).unwrap();
                frontend::sasl_response(scram.message(), &mut out).unwrap();
            }
            backend::Message::AuthenticationSaslFinal(b) => scram.finish(b.data()).unwrap(),
            backend::Message::BackendKeyData(k) => pid = k.process_id(),
            backend::Message::ReadyForQuery(_) => return (stream, pid),
            backend::Message::ErrorResponse(_) => panic!("login refused"),
            _ => {}
        }
        if !out.is_empty() {
            stream.write_all(&out).await.unwrap();
        }
    }
}

/// The SQLSTATE of the first error the server sends, or None if it closes.
async fn first_error(stream: &mut TcpStream) -> Option<String> {
    let mut buf = BytesMut::new();
    while let Some(m) = message(stream, &mut buf).await {
        if let backend::Message::ErrorResponse(body) = m {
            let mut fields = body.fields();
            while let Ok(Some(f)) = fallible_iterator::FallibleIterator::next(&mut fields) {
                if f.type_() == b'C' {
                    return Some(String::from_utf8_lossy(f.value_bytes()).into_owned());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_one_connection_and_nothing_else() {
    let (_db, _dir, gate) = gate_over_visits("protocol", 50, 10.0, 0.1).await;
    let (analyst, _n) = gate.connect().await;
    // A Parse whose parameter count runs past its length (found by the
    // wire fuzzer: pgwire's decoder panicked on it), a Bind cut short, and
    // a message whose length is below its own header.
    let frames: [&[u8]; 2] = [
        b"P\x00\x00\x00\x1c\x1c\x1c\x1c\x1dQ\x00\x00\x00\x1dx\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\xc6",
        b"B\x00\x00\x00\x08\x00\x00\x00\x05",
    ];
    // A length below its own header, cut off by the end of the stream:
    // closed (as PostgreSQL does), the server unharmed.
    let mut s = raw_login(gate.port).await;
    s.write_all(b"Q\x00\x00\x00\x02").await.unwrap();
    let _ = s.shutdown().await;
    assert!(matches!(
        first_error(&mut s).await.as_deref(),
        None | Some("08P01")
    ));
    for frame in frames {
        let mut s = raw_login(gate.port).await;
        s.write_all(frame).await.unwrap();
        let _ = s.shutdown().await;
        // A protocol violation, said as one (a decoder panic used to end
        // the connection's task without a word).
        let code = first_error(&mut s).await;
        assert_eq!(code.as_deref(), Some("08P01"), "{frame:?}");
    }
    // A SASL initial response cut short after the mechanism's name (found
    // by the wire fuzzer: pgwire read its length past the end and
    // panicked): an error for that login only.
    for tail in [&b""[..], b"\x00\x00", b"\x00\x00\x00\x10ab"] {
        let mut s = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
        let mut out = BytesMut::new();
        frontend::startup_message([("user", "analyst"), ("database", "x")], &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            message(&mut s, &mut buf).await,
            Some(backend::Message::AuthenticationSasl(_))
        ));
        let body = [&b"SCRAM-SHA-256\x00"[..], tail].concat();
        let mut frame = vec![b'p'];
        frame.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        frame.extend_from_slice(&body);
        s.write_all(&frame).await.unwrap();
        // A panic ended the connection's task without a word.
        let code = first_error(&mut s).await;
        assert!(code.is_some(), "{tail:?}: closed without a word");
    }
    // Junk instead of a startup packet.
    for junk in [
        &b"\x00\x00\x00\x08\x04\xd2\x16\x2fGARBAGE"[..],
        &[0xff; 64][..],
        &[0u8; 3][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
        let _ = s.write_all(junk).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "a junk connection stayed open");
    }
    // An Execute asking for 2^31 - 1 rows, or -1: pgwire reserved room
    // for that many rows before reading one (found by the wire fuzzer).
    for max_rows in [i32::MAX, -1, i32::MIN] {
        let mut s = raw_login(gate.port).await;
        let mut out = BytesMut::new();
        frontend::parse(
            "",
            "SELECT COUNT(*) FROM visits",
            std::iter::empty(),
            &mut out,
        )
        .unwrap();
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            std::iter::empty(),
            |_: (), _: &mut BytesMut| Ok(postgres_protocol::IsNull::No),
            std::iter::empty(),
            &mut out,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::execute("", max_rows, &mut out).unwrap();
        frontend::sync(&mut out);
        s.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let mut got_row = false;
        loop {
            match message(&mut s, &mut buf).await.expect("an answer") {
                backend::Message::DataRow(_) => got_row = true,
                backend::Message::ReadyForQuery(_) => break,
                backend::Message::ErrorResponse(_) => panic!("Execute({max_rows}) failed"),
                _ => {}
            }
        }
        assert!(got_row, "Execute({max_rows}) returned no row");
    }
    // The analyst's session and the server are unaffected.
    let row = simple_row(&analyst, "SELECT COUNT(*) FROM visits").await;
    assert!(row[0].as_deref().unwrap().parse::<i64>().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_log_in_take_no_connection_slot() {
    let (_db, dir, gate) = gate_over_visits("prelogin", 20, 10.0, 0.1).await;
    drop(gate);
    let port = free_port();
    let config = std::fs::read_to_string(dir.path().join("proxy.toml"))
        .unwrap()
        .replace("[server]\n", "[server]\nmax_connections = 2\n");
    let config = config.replacen(
        &config
            .lines()
            .find(|l| l.starts_with("listen = "))
            .unwrap()
            .to_string(),
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let gate = Dpgate::start(dir.path(), &config, port);
    // Ten sockets that connect and say nothing: each held a slot for 60 s
    // before, so with max_connections = 2 no analyst could log in.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a, _na) = gate.connect().await;
    let (b, _nb) = gate.connect().await;
    assert!(simple_row(&a, "SELECT 1").await[0].is_some());
    assert!(simple_row(&b, "SELECT 1").await[0].is_some());
    // The unauthenticated ones are closed after the login timeout.
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(40), idle[0].read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "an idle unauthenticated connection outlived the login timeout"
    );
}

/// The SCRAM salt dpgate answers `user`'s client-first message with.
async fn salt_of(port: u16, user: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", "x")], &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let scram = ScramSha256::new(b"any", ChannelBinding::unsupported());
    loop {
        out.clear();
        match message(&mut stream, &mut buf).await.expect("exchange") {
            backend::Message::AuthenticationSasl(_) => {
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap()
            }
            backend::Message::AuthenticationSaslContinue(b) => {
                let text = String::from_utf8_lossy(b.data()).into_owned();
                return text
                    .split(',')
                    .find_map(|f| f.strip_prefix("s="))
                    .unwrap_or_else(|| panic!("{text}"))
                    .to_string();
            }
            other => panic!("unexpected message {:?}", std::mem::discriminant(&other)),
        }
        stream.write_all(&out).await.unwrap();
    }
}

/// Connection ids are random: sequential ones would tell an analyst how
/// many logins everyone made between two of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_ids_are_random() {
    let (_db, _dir, gate) = gate_over_visits("randomids", 20, 1.0, 0.1).await;
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(raw_login_with_pid(gate.port).await.1);
    }
    assert!(pids.iter().all(|p| *p > 0), "{pids:?}");
    let steps: Vec<i64> = pids.windows(2).map(|w| w[1] as i64 - w[0] as i64).collect();
    assert!(
        steps.iter().any(|s| s.abs() > 1_000),
        "sequential ids: {pids:?}"
    );
}

/// A real user's SCRAM salt and an unknown name's stay the same on every
/// attempt, across a reload and across a restart on the same ledger, so
/// no salt tells a real name from a made-up one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salts_do_not_tell_real_names_from_made_up_ones() {
    let (_db, _dir, mut gate) = gate_over_visits("salts", 20, 1.0, 0.1).await;
    let before = (
        salt_of(gate.port, "analyst").await,
        salt_of(gate.port, "nobody").await,
    );
    assert_ne!(before.0, before.1);
    assert_eq!(salt_of(gate.port, "nobody").await, before.1);
    gate.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reloaded = (
        salt_of(gate.port, "analyst").await,
        salt_of(gate.port, "nobody").await,
    );
    assert_eq!(reloaded, before, "a reload changed a salt");
    // A restart on the same ledger keeps them too.
    let (dir, port, config) = (gate.dir.clone(), gate.port, gate.config_path());
    gate.kill9();
    drop(gate);
    let restarted = Dpgate::run(&dir, &["serve", "--config", config.to_str().unwrap()], port);
    let after = (
        salt_of(restarted.port, "analyst").await,
        salt_of(restarted.port, "nobody").await,
    );
    assert_eq!(after, before, "a restart changed a salt");
}

/// dpgate's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends `count` Parse messages named `prefix<i>` and a Sync; returns
/// (ParseComplete count, SQLSTATEs of errors).
async fn parse_many(stream: &mut TcpStream, prefix: &str, count: usize) -> (usize, Vec<String>) {
    let mut out = BytesMut::new();
    for i in 0..count {
        frontend::parse(&format!("{prefix}{i}"), "SELECT 1", [], &mut out).unwrap();
    }
    frontend::sync(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let (mut parsed, mut errors) = (0, Vec::new());
    while let Some(m) = message(stream, &mut buf).await {
        match m {
            backend::Message::ParseComplete => parsed += 1,
            backend::Message::ErrorResponse(body) => {
                let mut fields = body.fields();
                while let Ok(Some(f)) = fallible_iterator::FallibleIterator::next(&mut fields) {
                    if f.type_() == b'C' {
                        errors.push(String::from_utf8_lossy(f.value_bytes()).into_owned());
                    }
                }
            }
            backend::Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    (parsed, errors)
}

/// One connection cannot hold unbounded prepared statements: beyond
/// `server.max_prepared_per_connection` (1 000) a Parse is refused with
/// 53400, closing one makes room, and 20 000 attempts leave dpgate's
/// memory about where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_per_connection_are_capped() {
    let (_db, _dir, gate) = gate_over_visits("prepcap", 20, 1.0, 0.1).await;
    let pid = gate.child.id();
    let mut stream = raw_login(gate.port).await;
    let (parsed, errors) = parse_many(&mut stream, "s", 1_500).await;
    assert_eq!(parsed, 1_000);
    assert_eq!(errors, ["53400"]);
    // Closing one makes room for one more.
    let mut out = BytesMut::new();
    frontend::close(b'S', "s0", &mut out).unwrap();
    frontend::sync(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    while let Some(m) = message(&mut stream, &mut buf).await {
        if matches!(m, backend::Message::ReadyForQuery(_)) {
            break;
        }
    }
    assert_eq!(
        parse_many(&mut stream, "t", 2).await,
        (1, vec!["53400".to_string()])
    );
    let before = rss_kib(pid);
    for round in 0..20 {
        let (_, errors) = parse_many(&mut stream, &format!("r{round}_"), 1_000).await;
        assert_eq!(errors, ["53400"]);
    }
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 20 * 1024,
        "20 000 refused statements grew dpgate by {grown} KiB"
    );
}
