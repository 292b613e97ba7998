//! The HTTP listener, through the clients browserless and Chaser users have: `curl`, and
//! Python's `requests` (their SDK examples use it). Status codes and bodies exactly per the
//! SPEC's table; auth; `/metrics` read by the Prometheus org's parser; pressure; hostile
//! clients that must not stop the daemon or its socket API; the listener across a reload.

use browserd_proto::{Launch, SessionState, SessionsFilter};
use browserd_tests::http::{curl, parse_openmetrics, python, SseStream, TokenFile};
use browserd_tests::{DaemonGuard, Fixture};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn tracked(fixture: &Fixture, tracking_id: &str, workspace: &str) -> Launch {
    Launch {
        tracking_id: Some(tracking_id.parse().unwrap()),
        workspace: Some(workspace.parse().unwrap()),
        ..fixture.launch()
    }
}

fn live_ids(d: &DaemonGuard) -> Vec<String> {
    d.sessions(SessionsFilter::default())
        .into_iter()
        .filter(|s| s.state.is_live())
        .map(|s| s.id.to_string())
        .collect()
}

#[test]
fn browserless_kills_by_id_tracking_id_and_all_answer_204_and_leave_nothing() {
    let token = TokenFile::new("kill-token-4f1c");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = d.http_url();
    let fixture = Fixture::polite_stray();
    let (a, _) = d.spawn_with(&fixture, tracked(&fixture, "job-a", "w"));
    let (b, _) = d.spawn_with(&fixture, tracked(&fixture, "job-b", "w"));
    let (c, _) = d.spawn_with(&fixture, tracked(&fixture, "job-c", "w"));

    let by_id = curl(&[&format!("{url}/kill/{}?token={}", a.id, token.token)]);
    assert_eq!(by_id.status, 204, "{by_id:?}");
    assert!(by_id.body.is_empty());
    d.assert_session_gone(&a.id);
    assert!(!live_ids(&d).contains(&a.id.to_string()));

    let by_tracking_id = curl(&["-H", &token.bearer(), &format!("{url}/kill/job-b")]);
    assert_eq!(by_tracking_id.status, 204, "{by_tracking_id:?}");
    d.assert_session_gone(&b.id);

    let unknown = curl(&["-H", &token.bearer(), &format!("{url}/kill/no-such-job")]);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(unknown.error_code(), "not_found");
    assert!(unknown.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-job"));
    let invalid = curl(&["-H", &token.bearer(), &format!("{url}/kill/a%20b")]);
    assert_eq!(invalid.status, 404, "nothing can match it: {invalid:?}");

    let again = curl(&["-H", &token.bearer(), &format!("{url}/kill/{}", a.id)]);
    assert_eq!(
        again.status, 204,
        "an exited session is reported terminated"
    );

    let all = curl(&["-H", &token.bearer(), &format!("{url}/kill/all")]);
    assert_eq!(all.status, 204, "{all:?}");
    d.assert_session_gone(&c.id);
    assert!(live_ids(&d).is_empty());
    d.assert_all_sessions_gone();
}

/// The Chaser client's calls, through Python's `requests`: each answer's status and body.
const CHASER_CLIENT: &str = r#"
import json, os, requests
url = os.environ["URL"] + "/v1/sessions/bulk-terminate"
headers = {"Authorization": "Bearer " + os.environ["TOKEN"]}
answers = []
for body in json.loads(os.environ["BODIES"]):
    r = requests.post(url, json=body, headers=headers, timeout=30)
    answers.append({"status": r.status_code, "type": r.headers["content-type"], "body": r.json()})
print(json.dumps(answers))
"#;

fn chaser(url: &str, token: &TokenFile, bodies: &[Value]) -> Vec<Value> {
    let bodies = serde_json::to_string(bodies).unwrap();
    let printed = python(
        CHASER_CLIENT,
        &[("URL", url), ("TOKEN", &token.token), ("BODIES", &bodies)],
    );
    serde_json::from_str(&printed).expect("the client's answers")
}

fn sorted(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn chaser_bulk_terminate_by_ids_workspaces_and_all_of_a_type_with_and_without_force() {
    let token = TokenFile::new("chaser-7d2a");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = d.http_url();
    let sleeper = Fixture::sleeper();
    let (one, _) = d.spawn_with(&sleeper, tracked(&sleeper, "one", "a"));
    let (two, _) = d.spawn_with(&sleeper, tracked(&sleeper, "two", "b"));
    let (three, _) = d.spawn_with(&sleeper, tracked(&sleeper, "three", "b"));
    let (leased, leased_tree) = d.spawn_with(&sleeper, tracked(&sleeper, "leased", "c"));
    d.lease("leased", Some(60_000)).expect("lease");
    let browser = Fixture::fake_browser();
    let (browser_session, _) = d.spawn(&browser);
    let (sandbox, _) = d.spawn(&sleeper);

    let mut answers = chaser(
        &url,
        &token,
        &[
            json!({"ids": [one.id.as_str(), "nobody"], "all": null, "force": null,
                   "session_type": null, "workspaces": null}),
            json!({"workspaces": ["b"]}),
            json!({"ids": ["leased"], "force": false}),
        ],
    );
    d.assert_tree_alive(&leased_tree);
    answers.extend(chaser(
        &url,
        &token,
        &[
            json!({"ids": ["leased"], "force": true}),
            json!({"all": true, "session_type": "browser", "ids": [sandbox.id.as_str()],
                   "workspaces": ["a"], "force": null}),
        ],
    ));
    for answer in &answers {
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(answer["type"], "application/json");
        let keys: Vec<&String> = answer["body"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["failed", "terminated"],
            "exactly the Chaser response"
        );
    }

    let by_ids = &answers[0]["body"];
    assert_eq!(sorted(&by_ids["terminated"]), [one.id.to_string()]);
    assert_eq!(
        by_ids["failed"],
        json!([{"id": "nobody", "code": "not_found",
                "message": "no session with id or tracking id `nobody`"}])
    );
    let by_workspace = &answers[1]["body"];
    let mut expected = vec![two.id.to_string(), three.id.to_string()];
    expected.sort();
    assert_eq!(sorted(&by_workspace["terminated"]), expected);
    assert_eq!(by_workspace["failed"], json!([]));

    let unforced = &answers[2]["body"];
    assert_eq!(unforced["terminated"], json!([]));
    let failure = &unforced["failed"][0];
    assert_eq!(failure["id"], leased.id.as_str());
    assert_eq!(failure["code"], "leased");
    assert!(failure["message"].as_str().unwrap().contains("lease"));
    assert_eq!(failure.as_object().unwrap().len(), 3, "id, code, message");
    assert_eq!(
        sorted(&answers[3]["body"]["terminated"]),
        [leased.id.to_string()],
        "force terminates a leased session"
    );

    let all_browsers = &answers[4]["body"];
    assert_eq!(
        sorted(&all_browsers["terminated"]),
        [browser_session.id.to_string()],
        "`all` ignores ids and workspaces; session_type filters it"
    );
    assert_eq!(live_ids(&d), [sandbox.id.to_string()]);
    for gone in [&one, &two, &three, &leased, &browser_session] {
        d.assert_session_gone(&gone.id);
    }
}

#[test]
fn invalid_bulk_terminate_bodies_are_400_with_an_error_object() {
    let token = TokenFile::new("bad-bodies");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = format!("{}/v1/sessions/bulk-terminate", d.http_url());
    let bearer = token.bearer();
    let json_type = "Content-Type: application/json";
    for (what, args, code) in [
        ("{}", vec!["-H", json_type, "-d", "{}"], "invalid_request"),
        (
            "malformed JSON",
            vec!["-H", json_type, "-d", r#"{"all": tru"#],
            "invalid_json",
        ),
        (
            "not an object",
            vec!["-H", json_type, "-d", "[true]"],
            "invalid_json",
        ),
        (
            "an unknown field",
            vec![
                "-H",
                json_type,
                "-d",
                r#"{"all": true, "sessionType": "browser"}"#,
            ],
            "invalid_request",
        ),
        (
            "an invalid id",
            vec!["-H", json_type, "-d", r#"{"ids": ["a b"]}"#],
            "invalid_request",
        ),
        (
            "a form content type",
            vec!["-d", r#"{"all": true}"#],
            "invalid_request",
        ),
        (
            "text/plain",
            vec!["-H", "Content-Type: text/plain", "-d", r#"{"all": true}"#],
            "invalid_request",
        ),
        (
            "no content type",
            vec!["-H", "Content-Type:", "-d", r#"{"all": true}"#],
            "invalid_request",
        ),
    ] {
        let mut full = vec!["-H", bearer.as_str()];
        full.extend(args);
        full.push(url.as_str());
        let answer = curl(&full);
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert_eq!(
            answer.header("content-type").as_deref(),
            Some("application/json")
        );
        let body = answer.json();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
        assert_eq!(
            body["error"].as_object().unwrap().len(),
            2,
            "{what}: {body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let wrong_method = curl(&["-H", &bearer, &url]);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.error_code(), "invalid_request");
}

#[test]
fn sessions_are_listed_and_filtered_and_launched_over_http() {
    let token = TokenFile::new("listing-token");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = d.http_url();
    let bearer = token.bearer();
    let sleeper = Fixture::sleeper();
    let (seven, _) = d.spawn_with(&sleeper, tracked(&sleeper, "job-7", "crawl"));
    let (other, _) = d.spawn_with(&sleeper, tracked(&sleeper, "job-8", "other"));

    let ids = |query: &str| -> Vec<String> {
        let answer = curl(&["-H", &bearer, &format!("{url}/sessions{query}")]);
        assert_eq!(answer.status, 200, "{query}: {answer:?}");
        let body = answer.json();
        body["sessions"]
            .as_array()
            .expect("a `sessions` listing")
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("?trackingId=job-7"), [seven.id.to_string()]);
    assert_eq!(ids("?tracking_id=job-8"), [other.id.to_string()]);
    assert_eq!(ids("?workspace=crawl"), [seven.id.to_string()]);
    assert_eq!(ids("?type=browser&state=running"), Vec::<String>::new());
    assert_eq!(ids("").len(), 2);
    let unknown = curl(&["-H", &bearer, &format!("{url}/sessions?color=red")]);
    assert_eq!(unknown.status, 400, "{unknown:?}");
    assert!(unknown.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("color"));

    // A launch, as a Python client would send it: 201 with the session.
    let script = r#"
import json, os, requests
r = requests.post(os.environ["URL"] + "/v1/sessions", timeout=30,
                  headers={"Authorization": "Bearer " + os.environ["TOKEN"]},
                  json={"session_type": "sandbox", "command": ["sleep", "1000"],
                        "workspace": "api", "tracking_id": "from-http"})
print(json.dumps({"status": r.status_code, "body": r.json()}))
"#;
    let printed = python(script, &[("URL", &url), ("TOKEN", &token.token)]);
    let launched: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(launched["status"], 201, "{launched}");
    let session = &launched["body"];
    assert_eq!(session["tracking_id"], "from-http");
    assert_eq!(session["workspace"], "api");
    assert_eq!(session["state"], "running");
    let id: browserd_proto::SessionId = session["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(d.session(&id).state, SessionState::Running);
    let conflict = curl(&[
        "-H",
        &bearer,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"session_type": "sandbox", "command": ["true"], "tracking_id": "from-http"}"#,
        &format!("{url}/v1/sessions"),
    ]);
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.error_code(), "conflict");
    d.kill("all", true, None);
    d.wait_session_gone(&id, Duration::from_secs(5));
}

#[test]
fn requests_without_the_token_get_401_and_change_nothing() {
    let token = TokenFile::new("the-right-one");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = d.http_url();
    let (session, tree) = d.spawn(&Fixture::sleeper());

    for (method, path) in [
        ("GET", format!("/kill/{}", session.id)),
        ("GET", "/kill/all".to_owned()),
        ("POST", "/v1/sessions/bulk-terminate".to_owned()),
        ("GET", "/sessions".to_owned()),
        ("POST", "/v1/sessions".to_owned()),
        ("GET", "/pressure".to_owned()),
        ("GET", "/metrics".to_owned()),
        ("GET", "/v1/events".to_owned()),
    ] {
        let target = format!("{url}{path}");
        for credentials in [
            vec![],
            vec!["-H", "Authorization: Bearer the-wrong-one"],
            vec!["-H", "Authorization: Basic the-right-one"],
        ] {
            let mut args = vec!["-X", method, "-H", "Content-Type: application/json"];
            args.extend(credentials.iter().copied());
            args.push(&target);
            let answer = curl(&args);
            assert_eq!(
                answer.status, 401,
                "{method} {path} {credentials:?}: {answer:?}"
            );
            assert_eq!(answer.error_code(), "unauthorized");
            assert_eq!(
                answer.header("www-authenticate").as_deref(),
                Some("Bearer realm=\"browserd\"")
            );
        }
        let wrong_query = curl(&["-X", method, &format!("{target}?token=the-wrong-one")]);
        assert_eq!(wrong_query.status, 401, "{method} {path}");
    }
    d.assert_tree_alive(&tree);

    let active = curl(&[&format!("{url}/active")]);
    assert_eq!(active.status, 204, "/active needs no token");
    let in_query = curl(&[&format!("{url}/sessions?token=the-right-one")]);
    assert_eq!(in_query.status, 200);
    let in_header = curl(&["-H", &token.bearer(), &format!("{url}/pressure")]);
    assert_eq!(in_header.status, 200);
    let lowercase = curl(&[
        "-H",
        "authorization: bearer the-right-one",
        &format!("{url}/sessions"),
    ]);
    assert_eq!(lowercase.status, 200);
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    for (args, expected) in [
        (vec!["--http", "0.0.0.0:0"], "--http-token-file"),
        (vec!["--http", "[::]:0"], "--http-token-file"),
        (
            vec![
                "--http",
                "127.0.0.1:0",
                "--http-token-file",
                empty.to_str().unwrap(),
            ],
            "empty",
        ),
        (
            vec![
                "--http",
                "127.0.0.1:0",
                "--http-token-file",
                "/nonexistent/token",
            ],
            "/nonexistent/token",
        ),
    ] {
        let output = std::process::Command::new(browserd_tests::browserd_bin())
            .arg("--socket")
            .arg(dir.path().join("d.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(&args)
            .env_remove("BROWSERD_HTTP")
            .output()
            .expect("run browserd");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("d.sock").exists(),
            "refused before binding anything"
        );
    }
    // With a token, any address is allowed.
    let token = TokenFile::new("public");
    let d = DaemonGuard::builder()
        .flag("--http", "0.0.0.0:0")
        .http_token(&token)
        .start();
    let port = d.http_url().rsplit(':').next().unwrap().to_owned();
    let answer = curl(&[
        "-H",
        &token.bearer(),
        &format!("http://127.0.0.1:{port}/sessions"),
    ]);
    assert_eq!(answer.status, 200);
}

#[test]
fn the_token_never_appears_in_the_log() {
    let token = TokenFile::new("tok-9f8e7d6c5b4a3921");
    let d = DaemonGuard::builder()
        .http()
        .http_token(&token)
        .env("RUST_LOG", "trace")
        .start();
    let url = d.http_url();
    let (session, _) = d.spawn(&Fixture::sleeper());
    let secret = token.token.as_str();
    curl(&[&format!("{url}/sessions?token={secret}")]);
    curl(&[&format!("{url}/sessions?token=wrong-{secret}")]);
    curl(&[
        "-H",
        &format!("Authorization: Bearer {secret}x"),
        &format!("{url}/pressure"),
    ]);
    curl(&[
        "-H",
        &token.bearer(),
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!(r#"{{"ids": ["{secret}"]}}"#),
        &format!("{url}/v1/sessions/bulk-terminate"),
    ]);
    let killed = curl(&[&format!("{url}/kill/{}?token={secret}", session.id)]);
    assert_eq!(killed.status, 204);
    // Reloading re-reads the token file and writes the config into the handover.
    let reloaded = d.ctl(&["daemon", "reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    curl(&[&format!("{url}/metrics?token={secret}")]);

    let log = d.log();
    assert!(log.contains("HTTP request"), "the requests were logged");
    // The bulk-terminate body named the secret as an id; a log line about that id would be
    // the body's doing, not the token's: none is written at any level for a not_found.
    assert!(
        !log.contains(secret),
        "the token is in the log:\n{}",
        log.lines()
            .filter(|l| l.contains(secret))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn metrics_parse_as_openmetrics_and_counters_move_with_launches_and_kills() {
    let token = TokenFile::new("metrics");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = d.http_url();
    let scrape = || {
        let answer = curl(&["-H", &token.bearer(), &format!("{url}/metrics")]);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("content-type").as_deref(),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        parse_openmetrics(&answer.body)
    };
    let before = scrape();
    let (a, _) = d.spawn(&Fixture::polite_stray());
    let (b, _) = d.spawn(&Fixture::sleeper());
    let running = scrape();
    assert_eq!(
        running.value(
            "browserd_sessions",
            &json!({"state": "running", "type": "sandbox"})
        ),
        2.0
    );
    d.kill(a.id.as_str(), false, None);
    let killed = curl(&["-H", &token.bearer(), &format!("{url}/kill/{}", b.id)]);
    assert_eq!(killed.status, 204);
    let after = scrape();
    // A labelled family appears once it has a sample.
    let families = &after.families;
    for (family, kind) in [
        ("browserd_sessions", "gauge"),
        ("browserd_launches", "counter"),
        ("browserd_terminations", "counter"),
        ("browserd_launch_duration_seconds", "histogram"),
        ("browserd_kill_duration_seconds", "histogram"),
        ("browserd_orphans_reaped", "counter"),
        ("browserd_strays_signalled", "counter"),
        ("browserd_queue_depth", "gauge"),
        ("browserd_max_sessions", "gauge"),
        ("browserd_event_subscribers", "gauge"),
        ("browserd_http_requests", "counter"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert!(
        families.keys().all(|f| f.starts_with("browserd_")),
        "{families:?}"
    );

    let moved =
        |name: &str, labels: Value| after.value(name, &labels) - before.value(name, &labels);
    assert_eq!(
        moved("browserd_launches_total", json!({"result": "ok"})),
        2.0
    );
    assert_eq!(
        moved("browserd_terminations_total", json!({"result": "ok"})),
        2.0
    );
    assert_eq!(
        moved("browserd_kill_duration_seconds_count", json!({})),
        2.0
    );
    assert_eq!(
        moved("browserd_launch_duration_seconds_count", json!({})),
        2.0
    );
    assert_eq!(
        after.value("browserd_sessions", &json!({"state": "exited"})),
        2.0
    );
    assert!(
        after.value(
            "browserd_http_requests_total",
            &json!({"route": "/kill/{id}", "status": "204"})
        ) >= 1.0
    );
    // What `browserctl metrics` prints is the same exposition.
    let ctl = d.ctl(&["metrics"]);
    assert!(ctl.status.success());
    let from_socket = parse_openmetrics(&String::from_utf8_lossy(&ctl.stdout));
    let ok = json!({"result": "ok"});
    assert_eq!(
        from_socket.value("browserd_launches_total", &ok),
        after.value("browserd_launches_total", &ok)
    );
}

#[test]
fn pressure_says_whether_a_launch_would_be_admitted_and_why_not() {
    let token = TokenFile::new("pressure");
    let d = DaemonGuard::builder()
        .http()
        .http_token(&token)
        .max_sessions(2)
        .start();
    let url = d.http_url();
    let pressure = || {
        let answer = curl(&["-H", &token.bearer(), &format!("{url}/pressure")]);
        assert_eq!(answer.status, 200);
        answer.json()["pressure"].clone()
    };
    let idle = pressure();
    assert_eq!(idle["isAvailable"], true, "{idle}");
    assert_eq!(idle["reason"], "");
    assert_eq!(idle["running"], 0);
    assert_eq!(idle["queued"], 0);
    assert_eq!(idle["maxConcurrent"], 2);
    let cpu = idle["cpu"].as_f64().unwrap();
    let memory = idle["memory"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{idle}");
    assert!(memory > 0.0 && memory <= 100.0, "{idle}");
    assert!(idle["memoryTotalBytes"].as_u64().unwrap() > 0);

    let (first, _) = d.spawn(&Fixture::sleeper());
    d.spawn(&Fixture::sleeper());
    let full = pressure();
    assert_eq!(full["isAvailable"], false, "{full}");
    assert_eq!(full["reason"], "capacity");
    assert!(full["message"]
        .as_str()
        .unwrap()
        .contains("max_sessions is 2"));
    assert_eq!(full["running"], 2);
    let refused = d.launch(Fixture::sleeper().launch());
    assert_eq!(
        refused.unwrap_err().code,
        browserd_proto::ErrorCode::Capacity,
        "pressure said so"
    );
    let status = d.status();
    let reported = status.pressure.expect("status reports pressure");
    assert!(!reported.available);
    assert_eq!(reported.reason.as_deref(), Some("capacity"));
    let shown = d.ctl(&["status"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("admits launches  no: 2 sessions are live and max_sessions is 2"),
        "{text}"
    );

    d.kill(first.id.as_str(), true, None);
    assert_eq!(pressure()["isAvailable"], true);
    d.kill("all", true, None);
}

/// Waits until `stream`'s peer has closed it; returns how long that took, or `None` if it
/// is still open after `timeout`.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while start.elapsed() < timeout {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// The socket API answers at once, a launch and a kill included.
#[track_caller]
fn assert_socket_serves(d: &DaemonGuard) {
    let start = Instant::now();
    assert_eq!(d.status().protocol, 1);
    let session = d.launch_sandbox(&["sleep", "1000"]);
    let result = d.kill(session.id.as_str(), true, None);
    assert_eq!(result.terminated, [session.id.to_string()]);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the socket API took {:?}",
        start.elapsed()
    );
}

#[test]
fn hostile_clients_are_cut_off_while_the_daemon_serves_on() {
    let token = TokenFile::new("hostile");
    let d = DaemonGuard::builder()
        .http()
        .http_token(&token)
        .flag("--http-max-body", 4096)
        .flag("--http-client-timeout", "1s")
        .start();
    let url = d.http_url();
    let addr = host_port(&url);
    let bulk = format!("{url}/v1/sessions/bulk-terminate");

    // An oversized body, declared or streamed.
    let big = format!(r#"{{"ids": ["{}"]}}"#, "x".repeat(64 * 1024));
    let bearer = token.bearer();
    for extra in [None, Some("Transfer-Encoding: chunked")] {
        let mut args = vec!["-H", &bearer, "-H", "Content-Type: application/json"];
        if let Some(header) = extra {
            args.extend(["-H", header]);
        }
        args.extend(["--data-binary", big.as_str(), bulk.as_str()]);
        let answer = curl(&args);
        assert_eq!(answer.status, 413, "{extra:?}: {answer:?}");
        assert_eq!(answer.error_code(), "frame_too_large");
    }
    assert_socket_serves(&d);

    // Slowloris: headers a byte at a time, never finished.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /active HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let trickle = {
        let mut writer = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(100));
                if writer.write_all(b"a").is_err() {
                    return true;
                }
            }
            false
        })
    };
    // An idle keep-alive connection, after one answered request.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /active HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 204"));
    // And 500 connections that never send a byte.
    let silent: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();

    assert_socket_serves(&d);
    assert_eq!(curl(&[&format!("{url}/active")]).status, 204);
    let slow_closed = closed_within(&mut slow, Duration::from_secs(5));
    assert!(
        slow_closed.is_some_and(|took| took < Duration::from_secs(3)),
        "slowloris headers were cut off after the client timeout: {slow_closed:?}"
    );
    assert!(
        trickle.join().unwrap(),
        "the trickle met a closed connection"
    );
    assert!(closed_within(&mut idle, Duration::from_secs(3)).is_some());
    for mut connection in silent {
        assert!(
            closed_within(&mut connection, Duration::from_secs(3)).is_some(),
            "a silent connection was closed"
        );
    }
    assert_socket_serves(&d);
    assert_eq!(curl(&[&format!("{url}/active")]).status, 204);
}

#[test]
fn a_reload_keeps_the_http_listener_and_refuses_no_client() {
    let token = TokenFile::new("reload");
    let d = DaemonGuard::builder().http().http_token(&token).start();
    let url = d.http_url();
    let addr = host_port(&url);
    let (session, tree) = d.spawn(&Fixture::sleeper());
    let events = SseStream::open(&format!("{url}/v1/events"), &["-H", &token.bearer()]);
    d.wait_subscribers(1);
    let (probe, _) = d.spawn(&Fixture::sleeper());
    let first = events
        .next_event(Duration::from_secs(10))
        .expect("an event");
    assert_eq!(first["session"], probe.id.as_str());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut connection = TcpStream::connect(&addr).expect("no client is refused");
                connection
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                connection
                    .write_all(b"GET /active HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut reply = String::new();
                connection.read_to_string(&mut reply).unwrap();
                assert!(reply.starts_with("HTTP/1.1 204"), "{reply:?}");
                answered += 1;
            }
            answered
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let reloaded = d.ctl(&["daemon", "reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(hammer.join().expect("every request was answered") > 0);

    let mut kinds = Vec::new();
    while let Some(event) = events.next_event(Duration::from_secs(5)) {
        kinds.push(event["event"].as_str().unwrap().to_owned());
        if kinds.last().map(String::as_str) == Some("reload") {
            break;
        }
    }
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("reload"),
        "{kinds:?}"
    );
    assert_eq!(d.status().reloads, 1);
    assert_eq!(d.http_url(), url, "the same listener");
    d.assert_tree_alive(&tree);
    let killed = curl(&["-H", &token.bearer(), &format!("{url}/kill/{}", session.id)]);
    assert_eq!(killed.status, 204);
    d.assert_session_gone(&session.id);
}
