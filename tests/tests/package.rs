//! The Debian package, checked with the tools that consume it: `cargo deb` builds it, `dpkg-deb`
//! lists and describes it, `systemd-analyze` verifies and rates its unit, strace holds the unit's
//! sandbox against the syscalls and socket families the relay really makes, and the binary
//! unpacked from it starts with the packaged config and answers `/healthz`. The packaged config is
//! held against `relay serve --help`, so a new flag without a line there fails here.
//!
//! The package is made from the release binaries tests/run.sh builds (`cargo deb --no-build`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use e2e::{Client, Options, Relay, relay_bin, repo_path, rtp};
use serde_json::json;

/// Every flag of `relay serve` has a key in deploy/relay.toml, and every key is a flag; a
/// commented key shows the default `--help` gives; the keys, uncommented, make a file the
/// relay's own parser accepts.
#[test]
fn packaged_config_lists_every_flag_with_its_default() {
    let help = output(Command::new(relay_bin()).args(["serve", "--help"]));
    let flags = help_flags(&help);
    assert!(
        flags.contains_key("media") && flags.contains_key("log-format"),
        "{help}"
    );
    let text = std::fs::read_to_string(repo_path("deploy/relay.toml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut keys = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((key, value, active)) = key_line(line) else {
            continue;
        };
        assert!(
            lines[..i].last().is_some_and(|l| l.starts_with("# ")),
            "deploy/relay.toml: {key} needs a line saying what it does above it"
        );
        assert!(
            keys.insert(key.to_owned(), (value.to_owned(), active))
                .is_none(),
            "deploy/relay.toml: {key} twice"
        );
    }
    // `--config` names the file itself and is no key of it.
    let expected: BTreeSet<&str> = flags
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "config")
        .collect();
    let found: BTreeSet<&str> = keys.keys().map(String::as_str).collect();
    assert_eq!(
        found, expected,
        "deploy/relay.toml and `relay serve --help` must list the same settings"
    );
    for (key, (value, active)) in &keys {
        match &flags[key] {
            Some(default) if !active => assert_eq!(
                value.trim_matches('"'),
                default,
                "deploy/relay.toml: {key} shows a default other than --help's"
            ),
            _ => {}
        }
    }
    // Uncommented, the lines parse as the relay's own settings (names and types). The token
    // file is read at start, so the example's path is replaced by one that exists.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let all: String = keys
        .iter()
        .map(|(k, (v, _))| match k.as_str() {
            "control-token-file" => format!("{k} = {:?}\n", tokens.display().to_string()),
            _ => format!("{k} = {v}\n"),
        })
        .collect();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, &all).unwrap();
    let parsed = toml_check(&file);
    assert!(parsed.is_ok(), "{all}\n{parsed:?}");
}

/// `dpkg-deb --contents`: the binaries, the unit, the config, the docs, the dashboard and the
/// alert rules, nothing else, all owned by root with the right modes.
#[test]
fn package_holds_binaries_unit_config_docs_and_monitoring() {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb()));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.get(1), Some(&"0/0"), "owned by root: {line}");
        if cols[0].starts_with('-') {
            files.insert(cols[5].trim_start_matches('.').to_owned(), cols[0]);
        }
    }
    let mut expected = BTreeMap::from([
        ("/usr/bin/relay".to_owned(), "-rwxr-xr-x"),
        ("/usr/bin/loadgen".to_owned(), "-rwxr-xr-x"),
        (
            "/usr/lib/systemd/system/relay.service".to_owned(),
            "-rw-r--r--",
        ),
        ("/etc/relay/relay.toml".to_owned(), "-rw-r--r--"),
        ("/usr/share/doc/relay/README.md".to_owned(), "-rw-r--r--"),
        ("/usr/share/doc/relay/copyright".to_owned(), "-rw-r--r--"),
        (
            "/usr/share/relay/grafana/relay.json".to_owned(),
            "-rw-r--r--",
        ),
        (
            "/usr/share/relay/prometheus/relay-rules.yml".to_owned(),
            "-rw-r--r--",
        ),
    ]);
    for doc in std::fs::read_dir(repo_path("docs")).unwrap() {
        let name = doc.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") || name == "openapi.json" {
            expected.insert(format!("/usr/share/doc/relay/{name}"), "-rw-r--r--");
        }
    }
    assert!(expected.contains_key("/usr/share/doc/relay/OPERATIONS.md"));
    assert_eq!(files, expected, "{listing}");
}

/// `dpkg-deb -f` and the control archive: name, version, architecture, dependencies, the
/// config as a conffile, and maintainer scripts that create the user and handle the unit.
#[test]
fn package_control_fields_and_maintainer_scripts() {
    let fields = output(Command::new("dpkg-deb").arg("-f").arg(deb()));
    let field = |name: &str| -> String {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {fields}"))
            .to_owned()
    };
    let arch = output(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field("Package"), "relay");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Architecture"), arch.trim());
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('<'), "{fields}");
    assert!(field("Description").starts_with("Media relay"), "{fields}");
    let depends = field("Depends");
    for dep in ["adduser", "libc6"] {
        assert!(depends.contains(dep), "Depends: {depends}");
    }

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb())
        .arg(control.path()));
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap();
    assert_eq!(read("conffiles"), "/etc/relay/relay.toml\n");
    let postinst = read("postinst");
    for needle in [
        "adduser --system --group",
        "install -d -o relay -g relay -m 0750 /var/lib/relay",
        "deb-systemd-helper enable relay.service",
        "_dh_action=restart",
    ] {
        assert!(postinst.contains(needle), "postinst lacks {needle}");
    }
    let postrm = read("postrm");
    assert!(postrm.contains("deb-systemd-helper purge relay.service"));
    assert!(postrm.contains("rmdir --ignore-fail-on-non-empty /var/lib/relay"));
    assert!(read("prerm").contains("deb-systemd-invoke stop relay.service"));
    for script in ["postinst", "prerm", "postrm"] {
        assert!(!read(script).contains("#DEBHELPER#"), "{script}");
        run(Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script)));
    }
}

/// `systemd-analyze verify` accepts the unit in a root holding the unpacked package and the
/// host's systemd units and /usr/bin/kill (what an installed system has), without a warning; and
/// `systemd-analyze security` rates its sandbox at most 2.0 ("OK"; 10 is unsandboxed).
#[test]
fn unit_passes_systemd_analyze() {
    let root = unpacked();
    let units = root.path().join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_file() && name != "relay.service" {
            std::fs::copy(entry.path(), units.join(&name)).unwrap();
        }
    }
    std::fs::copy("/usr/bin/kill", root.path().join("usr/bin/kill")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();

    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("relay.service")
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/install-deps.sh installs it)");
    let said = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", root.path().display()))
        .arg("relay.service")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success(),
        "exposure over 2.0:\n{report}{}",
        String::from_utf8_lossy(&security.stderr)
    );
}

/// The binary unpacked from the package starts with the packaged config, with the data
/// directory and the ports given by flag and environment (which win over the file), as an
/// unprivileged user under the unit's LimitMEMLOCK (or this machine's hard limit, if lower), and
/// answers `/healthz`. On io_uring it also shows why the unit sets LimitMEMLOCK: with
/// RLIMIT_MEMLOCK 0 the relay refuses to start, and says what to raise.
#[test]
fn packaged_binary_starts_with_packaged_config() {
    let root = unpacked();
    let data = tempfile::tempdir().unwrap();
    let unit =
        std::fs::read_to_string(root.path().join("usr/lib/systemd/system/relay.service")).unwrap();
    let limit = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitMEMLOCK="))
        .and_then(|v| v.strip_suffix('M'))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("LimitMEMLOCK=<n>M in the unit")
        << 20;
    let memlock = limit.min(hard_memlock_limit());
    let bin = root.path().join("usr/bin/relay");
    let config = root.path().join("etc/relay/relay.toml");
    let backend = std::env::var("RELAY_TEST_BACKEND").unwrap_or_else(|_| "mmsg".into());
    let mut prefix = unprivileged(&[data.path()]);
    prefix.extend([
        "prlimit".into(),
        format!("--memlock={memlock}:{memlock}"),
        "--".into(),
    ]);
    let relay = Relay::start_with(Options {
        bin: Some(bin.clone()),
        prefix,
        args: vec!["--config".into(), config.display().to_string()],
        env: vec![
            ("RELAY_MEDIA".into(), "127.0.0.1:0".into()),
            ("RELAY_CONTROL".into(), "127.0.0.1:0".into()),
        ],
        no_addresses: true,
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.pid())).unwrap();
    let locked = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .unwrap();
    assert_eq!(
        locked.split_whitespace().nth(3),
        Some(memlock.to_string().as_str()),
        "{locked}"
    );
    assert_eq!(relay.ok("GET", "/healthz", None), json!({"status": "ok"}));
    let info = relay.ok("GET", "/v1/info", None);
    assert_eq!(info["backend"], backend.as_str(), "{info}");
    // The file says /var/lib/relay; the flag put the database here.
    assert!(data.path().join("relay.db").is_file());
    forward_once(&relay);
    drop(relay);

    if backend == "io_uring" {
        let none = tempfile::tempdir().unwrap();
        let mut argv = unprivileged(&[none.path()]);
        argv.extend(["prlimit".into(), "--memlock=0:0".into(), "--".into()]);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg(&bin)
            .args(["serve", "--backend", "io_uring", "--media", "127.0.0.1:0"])
            .args(["--control", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(none.path());
        let out = cmd.output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("RLIMIT_MEMLOCK"),
            "{:?}: {said}",
            out.status
        );
    }
}

/// Every syscall the relay makes, run as an unprivileged user under strace through start, rooms,
/// media, a rule, metrics and a graceful stop, is one the unit's SystemCallFilter allows, and
/// every socket family it opens is in its RestrictAddressFamilies: the sandbox does not break
/// the relay. (Syscalls io_uring performs for it bypass seccomp, as they do in production.)
#[test]
fn unit_sandbox_allows_what_the_relay_uses() {
    let unit = std::fs::read_to_string(repo_path("deploy/systemd/relay.service")).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
            .collect()
    };
    let sets = syscall_sets();
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    for value in values("SystemCallFilter") {
        let (target, names) = match value.strip_prefix('~') {
            Some(rest) => (&mut deny, rest.to_owned()),
            None => (&mut allow, value),
        };
        for name in names.split_whitespace() {
            expand(&sets, name, target);
        }
    }
    assert!(allow.contains("io_uring_setup") && deny.contains("setuid"));
    let families: BTreeSet<String> = values("RestrictAddressFamilies")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut prefix = unprivileged(&[dir.path(), &data]);
    prefix.extend(["strace", "-f", "-qq", "-o"].map(String::from));
    prefix.push(trace.display().to_string());
    let mut relay = Relay::start_with(Options {
        bin: Some(unpacked_bin()),
        prefix,
        data_dir: Some(data),
        ..Default::default()
    });
    forward_once(&relay);
    let id = relay.rule(json!({"match": {"participants": [{"room": "r", "participant": "b"}]}}));
    relay.ok("GET", "/v1/rules", None);
    relay.ok("GET", "/v1/audit", None);
    relay.metrics_text();
    relay.lift(id);
    // strace's child is the relay: stop that one gracefully, then wait for strace to exit.
    let tracer = relay.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children")).unwrap();
    let traced: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sending a signal to a process this test started.
    unsafe { libc::kill(traced, libc::SIGTERM) };
    let status = relay
        .signal_and_wait(0, Duration::from_secs(10))
        .expect("the relay stops on SIGTERM");
    assert!(status.success(), "{status:?}");

    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    let mut opened = BTreeSet::new();
    for line in text.lines() {
        let rest = line.split_once(' ').map_or("", |(_, r)| r.trim_start());
        let resumed = rest.strip_prefix("<... ");
        let name = match resumed {
            Some(resumed) => resumed.split_whitespace().next().unwrap_or(""),
            None => rest.split('(').next().unwrap_or(""),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // "+++ exited", "--- SIGTERM", ...
        }
        used.insert(name.to_owned());
        // A call another thread interrupted is printed twice: its arguments on the
        // `<unfinished ...>` line, its result on the `<... resumed>` one.
        if (name == "socket" || name == "socketpair") && resumed.is_none() {
            let family = rest[name.len() + 1..].split(',').next().unwrap_or("");
            opened.insert(family.to_owned());
        }
    }
    assert!(
        used.contains("bind") && used.contains("fsync"),
        "the trace covers the run: {used:?}"
    );
    let refused: Vec<&String> = used
        .iter()
        .filter(|s| !allow.contains(*s) || deny.contains(*s))
        .collect();
    assert!(
        refused.is_empty(),
        "SystemCallFilter would refuse {refused:?}"
    );
    let missing: Vec<&String> = opened.difference(&families).collect();
    assert!(
        missing.is_empty(),
        "RestrictAddressFamilies lacks {missing:?}"
    );
}

/// The .deb, built once per test binary.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let release = relay_bin()
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/relay")
            .join("release");
        assert!(
            release.join("relay").is_file() && release.join("loadgen").is_file(),
            "the package holds the release binaries: run \
             `cargo build --release -p relay -p loadgen` first (tests/run.sh does)"
        );
        let out = release.parent().unwrap().join("debian-e2e");
        let _ = std::fs::remove_dir_all(&out);
        // --fast: lighter compression, same content. --no-dbgsym --strip: the binaries stripped
        // as in the shipped package, without making the debug-symbol package too.
        let said = output(
            Command::new("cargo")
                .args(["deb", "--no-build", "--fast", "--no-dbgsym", "--strip"])
                .arg("--manifest-path")
                .arg(repo_path("relay/Cargo.toml"))
                .arg("--output")
                .arg(&out),
        );
        let path = PathBuf::from(said.lines().last().unwrap_or("").trim());
        assert!(
            path.extension().is_some_and(|e| e == "deb") && path.is_file(),
            "cargo deb printed {said:?}"
        );
        path
    })
}

/// The package unpacked (`dpkg-deb -x`) into a fresh temporary directory anyone may read.
fn unpacked() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb())
        .arg(root.path()));
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    root
}

/// The relay binary from the package, unpacked once.
fn unpacked_bin() -> PathBuf {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(unpacked).path().join("usr/bin/relay")
}

/// A command prefix that runs the relay as the unit does, as a user without privileges: as
/// nobody when this test runs as root (then `dirs` are given to nobody), else as is.
fn unprivileged(dirs: &[&Path]) -> Vec<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Vec::new();
    }
    for d in dirs {
        std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let id = NOBODY.to_string();
    vec![
        "setpriv".into(),
        format!("--reuid={id}"),
        format!("--regid={id}"),
        "--clear-groups".into(),
        "--".into(),
    ]
}

/// The hard RLIMIT_MEMLOCK of this process, in bytes (no child can go above it without
/// CAP_SYS_RESOURCE).
fn hard_memlock_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .unwrap();
    match line.split_whitespace().nth(4) {
        Some("unlimited") => u64::MAX,
        Some(n) => n.parse().unwrap(),
        None => panic!("{line}"),
    }
}

/// The uid and gid of nobody on Debian.
const NOBODY: u32 = 65534;

/// One room, two participants, one RTP packet from a to b.
fn forward_once(relay: &Relay) {
    let (a, b) = (Client::new(), Client::new());
    relay.room("r");
    relay.join("r", "a", &a, &[(1, "audio")]);
    relay.join("r", "b", &b, &[]);
    let packet = rtp(1, 1, b"hello");
    a.send(relay.media, &packet);
    assert_eq!(b.recv_n(1, e2e::PATIENT), vec![packet]);
}

/// Long flags of `--help` output with the `[default: ...]` each gives (its first word, when it
/// is a literal value).
fn help_flags(help: &str) -> BTreeMap<String, Option<String>> {
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            let name = rest.split([' ', '<']).next().unwrap_or("").to_owned();
            if name != "help" {
                flags.insert(name.clone(), None);
                current = Some(name);
            } else {
                current = None;
            }
            continue;
        }
        let Some(flag) = &current else {
            continue;
        };
        if let Some(after) = trimmed.split_once("[default: ").map(|(_, a)| a)
            && flags[flag].is_none()
        {
            let value = after.split([']', ',', ';']).next().unwrap_or("").trim();
            // "one per available core", "the bound address": no literal value.
            if !value.contains(' ') {
                flags.insert(flag.clone(), Some(value.to_owned()));
            }
        }
    }
    flags
}

/// A `key = value` line of the config, commented (`# key = value`) or not: (key, value, active).
fn key_line(line: &str) -> Option<(&str, &str, bool)> {
    let (body, active) = match line.strip_prefix("# ") {
        Some(rest) => (rest, false),
        None => (line, true),
    };
    let (key, value) = body.split_once(" = ")?;
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    is_key.then_some((key, value.trim(), active))
}

/// Parses a config file with the relay's own parser.
fn toml_check(path: &Path) -> Result<relay::config::Config, String> {
    relay::config::ServeArgs {
        config: Some(path.to_path_buf()),
        ..Default::default()
    }
    .resolve()
    .map_err(|e| format!("{e:#}"))
}

/// systemd's named syscall sets (`systemd-analyze syscall-filter`): set -> members, which are
/// syscalls or other sets.
fn syscall_sets() -> BTreeMap<String, Vec<String>> {
    let text = output(Command::new("systemd-analyze").arg("syscall-filter"));
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_owned());
            sets.entry(line.trim().to_owned()).or_default();
        } else if line.starts_with("    ") && !line.trim_start().starts_with('#') {
            if let Some(set) = &current {
                sets.get_mut(set).unwrap().push(line.trim().to_owned());
            }
        } else if !line.starts_with("    ") {
            current = None;
        }
    }
    assert!(sets.contains_key("@system-service"), "{text}");
    sets
}

/// Adds the syscalls `name` stands for (a set, expanded, or one syscall) to `into`.
fn expand(sets: &BTreeMap<String, Vec<String>>, name: &str, into: &mut BTreeSet<String>) {
    match sets.get(name) {
        Some(members) => {
            for m in members {
                expand(sets, m, into);
            }
        }
        None => {
            into.insert(name.to_owned());
        }
    }
}

/// Runs a command and returns its standard output; panics with its output if it fails.
fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/install-deps.sh installs the tools)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must succeed.
fn run(cmd: &mut Command) {
    output(cmd);
}
