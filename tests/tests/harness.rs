//! The fleet test harness itself: namespaces that reach each other over the bridge, nftables
//! counters and drop rules inside a namespace, clean removal; an etcd cluster that elects a
//! leader, survives the leader's `kill -9`, and is torn down.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::etcd::Etcd;
use e2e::netns::{Hook, Lan};

/// Sends `count` datagrams from `from` (inside its namespace) to `to` and returns how many
/// echoes came back.
fn echoes(lan: &Lan, from: &str, to: SocketAddr, count: usize) -> usize {
    lan.host(from)
        .run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut got = 0;
            for i in 0..count {
                let msg = format!("ping {i}");
                // An output drop rule makes the send itself fail (EPERM).
                if s.send_to(msg.as_bytes(), to).is_err() {
                    continue;
                }
                let mut buf = [0u8; 64];
                if let Ok((n, src)) = s.recv_from(&mut buf) {
                    assert_eq!(src, to);
                    assert_eq!(&buf[..n], msg.as_bytes());
                    got += 1;
                }
            }
            got
        })
        .unwrap()
}

#[test]
fn namespaces_echo_count_block_and_vanish() {
    let lan = Lan::new(&["a", "b"]).unwrap();
    let (a, b) = (lan.host("a").clone(), lan.host("b").clone());
    assert_ne!(a.addr, b.addr);
    assert_eq!(a.addr.octets()[..3], lan.subnet);

    // A UDP echo server inside b, on b's address.
    let to = SocketAddr::from((b.addr, 7007));
    let server = b
        .spawn(move || {
            let s = UdpSocket::bind(to).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            while let Ok((n, src)) = s.recv_from(&mut buf) {
                if &buf[..n] == b"stop" {
                    break;
                }
                s.send_to(&buf[..n], src).unwrap();
            }
        })
        .unwrap();
    // (Nothing is ever sent to a LAN address from the root namespace: there it would leave
    // the machine.)
    // The kernel counts what a sends to b's port.
    a.count(
        "to_b",
        Hook::Output,
        &format!("ip daddr {} udp dport 7007", b.addr),
    )
    .unwrap();
    assert_eq!(echoes(&lan, "a", to, 20), 20);
    assert_eq!(a.counter("to_b").unwrap().packets, 20);

    // A drop rule in a's namespace cuts it off; removing it heals.
    let handle = a
        .block(Hook::Output, &format!("ip daddr {}", b.addr))
        .unwrap();
    assert_eq!(echoes(&lan, "a", to, 3), 0);
    // Counted before the drop (same chain, earlier rule).
    assert_eq!(a.counter("to_b").unwrap().packets, 23);
    a.unblock(Hook::Output, handle).unwrap();
    assert_eq!(echoes(&lan, "a", to, 5), 5);

    lan.host("a")
        .run(move || {
            UdpSocket::bind("0.0.0.0:0")
                .unwrap()
                .send_to(b"stop", to)
                .unwrap()
        })
        .unwrap();
    server.join().unwrap();

    // A process started in a namespace is killed when the LAN goes, and so are the namespaces.
    let mut sleeper = a.command("sleep").arg("60").spawn().unwrap();
    let names: Vec<String> = lan
        .hosts
        .iter()
        .map(|h| h.ns.clone())
        .chain([lan.bridge.clone()])
        .collect();
    drop(lan);
    let started = Instant::now();
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "sleep was killed, not finished");
    assert!(started.elapsed() < Duration::from_secs(5));
    let listed = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for ns in names {
        assert!(!listed.contains(&ns), "{ns} left behind");
    }
}

#[test]
fn a_panicking_test_leaves_no_namespace() {
    let names = std::panic::catch_unwind(|| {
        let lan = Lan::new(&["x"]).unwrap();
        let names = vec![lan.host("x").ns.clone(), lan.bridge.clone()];
        std::panic::panic_any(names);
    })
    .unwrap_err();
    let names = names.downcast::<Vec<String>>().unwrap();
    let listed = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for ns in names.iter() {
        assert!(!listed.contains(ns.as_str()), "{ns} left behind");
    }
}

#[test]
fn etcd_cluster_survives_the_leaders_kill9() {
    let mut etcd = Etcd::start(3).unwrap();
    let leader = etcd.leader(Duration::from_secs(10)).unwrap();
    let endpoints = etcd.endpoints().join(",");
    etcdctl(&endpoints, &["put", "k", "before"]);

    let pid = etcd.pid(leader).unwrap();
    etcd.kill9(leader).unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let started = Instant::now();
    let next = etcd.leader(Duration::from_secs(10)).unwrap();
    println!(
        "new leader m{next} agreed {:?} after the kill",
        started.elapsed()
    );
    assert_ne!(next, leader);
    let alive: Vec<String> = etcd
        .endpoints()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e)
        .collect();
    etcdctl(&alive.join(","), &["put", "k", "after"]);

    etcd.restart(leader).unwrap();
    // The restarted member caught up with the write made while it was down.
    let mine = etcd.endpoints()[leader].clone();
    let got = etcdctl(
        &mine,
        &["get", "k", "--print-value-only", "--consistency=s"],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut value = got.trim().to_owned();
    while value != "after" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        value = etcdctl(
            &mine,
            &["get", "k", "--print-value-only", "--consistency=s"],
        )
        .trim()
        .to_owned();
    }
    assert_eq!(value, "after");

    let pids: Vec<u32> = (0..3).map(|i| etcd.pid(i).unwrap()).collect();
    drop(etcd);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "etcd {pid} left running"
        );
    }
}

#[test]
fn etcd_in_namespaces() {
    let lan = Lan::new(&["e1", "c"]).unwrap();
    let mut etcd = Etcd::start_on(&[lan.host("e1")]).unwrap();
    assert_eq!(etcd.leader(Duration::from_secs(10)).unwrap(), 0);
    let endpoint = etcd.endpoints()[0].clone();
    // Reachable from another host of the LAN...
    let out = lan
        .host("c")
        .command("etcdctl")
        .args(["--endpoints", &endpoint, "put", "k", "v"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // ...and not once that host drops what goes to it.
    let handle = lan
        .host("c")
        .block(Hook::Output, &format!("ip daddr {}", lan.host("e1").addr))
        .unwrap();
    let out = lan
        .host("c")
        .command("etcdctl")
        .args([
            "--endpoints",
            &endpoint,
            "--dial-timeout=1s",
            "--command-timeout=1s",
        ])
        .args(["put", "k", "w"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    lan.host("c").unblock(Hook::Output, handle).unwrap();
    etcd.kill9(0).unwrap();
    etcd.restart(0).unwrap();
}

fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}
