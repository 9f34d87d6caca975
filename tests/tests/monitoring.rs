//! Monitoring, checked with the tools that consume it: the `/metrics` text of a running relay
//! through `promtool check metrics` and the Python client's parser; the alert rules through
//! `promtool check rules` and their unit tests; the Grafana dashboard's queries as PromQL; the
//! metric names the dashboard and the rules use against what the relay exposes; and a real
//! Prometheus server that scrapes a relay, evaluates the rules and answers every dashboard query.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Client, Relay, repo_path, rtp};
use serde_json::{Value, json};

/// The full `/metrics` text passes `promtool check metrics` without a word, and the Python
/// client's parser reads it with warnings made errors; the build, process and apply-time
/// metrics are there with their types and labels, and a control change is observed.
#[test]
fn metrics_parse_cleanly_with_promtool_and_the_python_client() {
    let (relay, _clients) = busy_relay();
    let before = relay.metric("relay_control_apply_duration_seconds_count");
    relay.room("another");
    let c = Client::new();
    relay.join("another", "x", &c, &[(9, "audio")]);
    assert!(
        relay.metric("relay_control_apply_duration_seconds_count") > before,
        "adding a participant publishes a change to the workers"
    );
    let text = relay.metrics_text();

    let promtool = pipe(Command::new("promtool").args(["check", "metrics"]), &text);
    assert!(
        promtool.0 && promtool.1.trim().is_empty(),
        "promtool check metrics:\n{}",
        promtool.1
    );

    const PARSE: &str = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        fams = {}\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   fams[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]\n\
        print(json.dumps(fams))\n";
    let (ok, said) = pipe(
        Command::new("python3").args(["-W", "error", "-c", PARSE]),
        &text,
    );
    assert!(ok, "prometheus_client parser: {said}");
    let families: BTreeMap<String, Value> =
        serde_json::from_str(said.lines().last().unwrap_or("")).expect("parser output");
    let kind = |name: &str| {
        families
            .get(name)
            .map(|f| f[0].as_str().unwrap().to_owned())
    };
    // The client names counter families without `_total`.
    assert_eq!(kind("relay_build_info").as_deref(), Some("gauge"));
    let build = &families["relay_build_info"][1][0];
    assert_eq!(build[1]["version"], env!("CARGO_PKG_VERSION"));
    let backend = std::env::var("RELAY_TEST_BACKEND").unwrap_or_else(|_| "mmsg".into());
    assert_eq!(build[1]["backend"], backend.as_str());
    assert_eq!(build[2], 1.0);
    assert_eq!(kind("process_cpu_seconds").as_deref(), Some("counter"));
    for gauge in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_threads",
    ] {
        assert_eq!(kind(gauge).as_deref(), Some("gauge"), "{gauge}");
    }
    assert_eq!(
        kind("relay_control_apply_duration_seconds").as_deref(),
        Some("histogram")
    );
    let threads = &families["process_threads"][1][0][2];
    assert!(
        threads.as_f64().unwrap() >= 3.0,
        "workers and the control thread: {threads}"
    );
    for counter in [
        "relay_received_bytes",
        "relay_sent_bytes",
        "relay_packets_in",
    ] {
        assert_eq!(kind(counter).as_deref(), Some("counter"), "{counter}");
    }
}

/// `promtool check rules` accepts the alert rules and `promtool test rules` passes their unit
/// tests, which give every alert a case where it fires and one where it stays silent.
#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rules = repo_path("deploy/prometheus/relay-rules.yml");
    let tests = repo_path("deploy/prometheus/relay-rules.test.yml");
    let check = output(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&rules),
    );
    assert!(check.contains("SUCCESS"), "{check}");
    let test = output(
        Command::new("promtool")
            .arg("test")
            .arg("rules")
            .arg(&tests),
    );
    assert!(test.contains("SUCCESS"), "{test}");

    let alerts: BTreeSet<String> = std::fs::read_to_string(&rules)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    let text = std::fs::read_to_string(&tests).unwrap();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            current = name.to_owned();
        } else if line == "exp_alerts: []" {
            silent.insert(current.clone());
        } else if line == "exp_alerts:" {
            fires.insert(current.clone());
        }
    }
    assert_eq!(fires, alerts, "every alert has a case where it fires");
    assert_eq!(
        silent, alerts,
        "every alert has a case where it stays silent"
    );
}

/// The dashboard is a Grafana dashboard whose every panel has a place, the data source
/// variable and queries, and whose every query is valid PromQL (`promtool check rules` on a
/// recording rule per query).
#[test]
fn dashboard_is_well_formed_and_its_queries_are_valid_promql() {
    let dashboard = dashboard();
    let mut ids = BTreeSet::new();
    let mut rows = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "id of {title}");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}");
        if panel["type"] == "row" {
            rows += 1;
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert!(t["refId"].is_string() && t["expr"].is_string(), "{title}");
        }
    }
    assert!(rows >= 4, "grouped in rows");
    let exprs = dashboard_queries(&dashboard);
    assert!(exprs.len() >= 25, "{}", exprs.len());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        yaml += &format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    std::fs::write(&file, &yaml).unwrap();
    let check = output(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&file),
    );
    assert!(
        check.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{check}"
    );
}

/// Every metric the dashboard and the alert rules name is one the relay exposes (with a rule
/// in force, so the per-rule series exist).
#[test]
fn dashboard_and_rules_name_only_metrics_the_relay_exposes() {
    let (relay, _clients) = busy_relay();
    let mut exposed: BTreeSet<String> = relay
        .metrics_text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    // Prometheus makes `up` itself for every target.
    exposed.insert("up".into());

    let dashboard = dashboard();
    let mut used = BTreeMap::new();
    for e in dashboard_queries(&dashboard) {
        for name in metric_names(&e) {
            used.insert(name, "deploy/grafana/relay.json");
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            let inner = q.strip_prefix("label_values(").expect("label_values query");
            let name = inner.split(['{', ',']).next().unwrap().trim();
            used.insert(name.to_owned(), "deploy/grafana/relay.json (variables)");
        }
    }
    let rules = std::fs::read_to_string(repo_path("deploy/prometheus/relay-rules.yml")).unwrap();
    for e in rule_exprs(&rules) {
        for name in metric_names(&e) {
            used.insert(name, "deploy/prometheus/relay-rules.yml");
        }
    }
    assert!(used.contains_key("relay_packets_in_total"), "{used:?}");

    let unknown: Vec<String> = used
        .iter()
        .filter(|(n, _)| !exposed.contains(*n))
        .map(|(n, w)| format!("{n} ({w})"))
        .collect();
    assert!(unknown.is_empty(), "not exposed by the relay: {unknown:?}");
}

/// A real Prometheus server scrapes a relay twice a second, loads the alert rules and evaluates
/// them without error, and answers every dashboard query without error; the forwarding panels
/// show data.
#[test]
fn prometheus_scrapes_the_relay_and_evaluates_every_query() {
    let (relay, clients) = busy_relay();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: relay\n    static_configs:\n      - targets: [\"{}\"]\n",
            repo_path("deploy/prometheus/relay-rules.yml").display(),
            relay.control
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus; tests/install-deps.sh installs it)"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: &str| -> Result<Value, String> {
        let resp = ureq::get(&format!("{api}/query"))
            .query("query", q)
            .timeout(Duration::from_secs(5))
            .call();
        let body: Value = match resp {
            Ok(r) => r.into_json().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(_, r)) => r.into_json().map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        if body["status"] == "success" {
            Ok(body["data"]["result"].clone())
        } else {
            Err(body.to_string())
        }
    };
    // Two scrapes that found the relay up, with traffic between them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let packet = rtp(1, 2, b"tick");
        clients[0].send(relay.media, &packet);
        let scrapes = query("sum(count_over_time(up{job=\"relay\"}[1m]))")
            .ok()
            .and_then(|r| r[0]["value"][1].as_str().map(str::to_owned))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if scrapes >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the relay: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        query("up{job=\"relay\"}").unwrap()[0]["value"][1],
        "1",
        "the scrape succeeds"
    );

    for e in dashboard_queries(&dashboard()) {
        if let Err(err) = query(&e) {
            panic!("dashboard query {e} fails: {err}");
        }
    }
    let rate = query("sum(rate(relay_packets_in_total{job=\"relay\"}[1m]))").unwrap();
    assert!(
        rate[0]["value"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().unwrap() > 0.0),
        "the forwarding panel has data: {rate}"
    );

    // Every alert rule evaluated at least once, and none with an error.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rules: Value = ureq::get(&format!("{api}/rules"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert!(all.len() >= 8, "{rules}");
        let bad: Vec<&Value> = all
            .iter()
            .copied()
            .filter(|r| r["health"] == "err")
            .collect();
        assert!(bad.is_empty(), "rules failing: {bad:?}");
        if all.iter().all(|r| r["health"] == "ok") {
            break;
        }
        assert!(Instant::now() < deadline, "rules never evaluated: {rules}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A relay with a room of two, a packet forwarded and a drop rule in force.
fn busy_relay() -> (Relay, [Client; 2]) {
    let relay = Relay::start();
    let clients = [Client::new(), Client::new()];
    relay.room("r");
    relay.join("r", "a", &clients[0], &[(1, "audio")]);
    relay.join("r", "b", &clients[1], &[]);
    let packet = rtp(1, 1, b"x");
    clients[0].send(relay.media, &packet);
    assert_eq!(clients[1].recv_n(1, e2e::PATIENT), vec![packet]);
    relay.room("ruled");
    let c = Client::new();
    relay.join("ruled", "p", &c, &[(5, "video")]);
    relay.rule(json!({"match": {"participants": [{"room": "ruled", "participant": "p"}]}}));
    (relay, clients)
}

/// A child process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_path("deploy/grafana/relay.json")).unwrap())
        .expect("the dashboard is JSON")
}

/// Every panel, those inside rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// The dashboard's queries with its variables given values a Prometheus with one scrape job
/// named relay answers.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$job", "relay")
                .replace("$instance", ".+")
        })
        .map(|e| e.replace("$__rate_interval", "1m"))
        .collect()
}

/// The `expr` of every rule in a rules file (one line, or a `|` block).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr: ") else {
            continue;
        };
        if rest.trim() != "|" {
            out.push(rest.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        while let Some(next) = lines.peek() {
            if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                break;
            }
            block += next.trim();
            block.push(' ');
            lines.next();
        }
        out.push(block);
    }
    out
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping lists that are neither functions nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Blank out strings, {...} and [...].
    let mut plain = String::new();
    let mut closing: Option<char> = None;
    let mut in_string = false;
    for c in expr.chars() {
        if in_string {
            in_string = c != '"';
            continue;
        }
        match (closing, c) {
            (_, '"') => in_string = true,
            (None, '{') => closing = Some('}'),
            (None, '[') => closing = Some(']'),
            (Some(end), c) if c == end => closing = None,
            (Some(_), _) => {}
            (None, c) => plain.push(c),
        }
        if closing.is_some() || in_string {
            plain.push(' ');
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            if c == ')' {
                skip_list = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ]
        .contains(&word.as_str())
        {
            // The label list that follows is no metric.
            skip_list = next == Some(&'(');
            while i < chars.len() && chars[i] != '(' {
                i += 1;
            }
            i += 1;
            continue;
        }
        // `sum by (le) (...)`: an aggregation with its grouping first.
        let rest: String = chars[i..].iter().collect();
        let rest = rest.trim_start();
        let grouped = ["by", "without"].iter().any(|g| {
            rest.strip_prefix(g)
                .is_some_and(|r| r.trim_start().starts_with('('))
        });
        if skip_list || grouped || next == Some(&'(') || KEYWORDS.contains(&word.as_str()) {
            continue;
        }
        names.insert(word);
    }
    names
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

/// Runs a command with `input` on standard input; returns whether it succeeded and all it said.
fn pipe(cmd: &mut Command, input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (tests/install-deps.sh installs the tools)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn metric_names_of_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.99, sum by (route, le) (rate(a_bucket{x=~"b.*"}[5m])))"#),
        ["a_bucket"]
    );
    assert_eq!(
        names("relay_ready == 0 unless on (job, instance) relay_draining == 1"),
        ["relay_draining", "relay_ready"]
    );
    assert_eq!(
        names("8 * sum without (reason) (x_total) / ignoring(le) y - time() > 1e3"),
        ["x_total", "y"]
    );
    assert_eq!(names(r#"absent(up{job="relay"})"#), ["up"]);
}
