//! browserd's image, built from the binaries under test and run with Podman exactly as the
//! README's Container and Sidecar sections say: the command templates below render both the
//! commands these tests run and the README's (a test checks that the README shows each of
//! them, and no other `podman` command). browserd is PID 1 and reaps orphans; a browser's
//! DevTools endpoint answers from the host; `podman stop` ends everything within the grace
//! with exit 0; a second container on the socket volume is served when its user is in the
//! socket's group, as primary or supplementary group, and refused, clearly, when not. The
//! sidecar's user, group and mounts come from `deploy/kubernetes/browserd-sidecar.yaml`, so
//! what passes here is what the manifest sets.
//!
//! Needs root and Podman (`scripts/deps --test` installs it); where they are missing, each
//! test prints why it is skipped.

use browserd_proto::{
    ExitStatus, LaunchResult, SessionState, SessionsResult, StatusResult, TerminateResult,
};
use browserd_tests::cdp::{Cdp, PageServer};
use browserd_tests::container::{render, repo_root, say, Image, Podman, Removal, BASE_IMAGE};
use browserd_tests::{procfs, wait_for, wait_until, yaml};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

// ----- The commands, as the README shows them -----

/// The runtime image around the binaries cargo built; `{debian}` is the base
/// `scripts/container-base` makes where no registry is reachable.
const BUILD: &str =
    "podman build --build-arg DEBIAN_IMAGE={debian} --target prebuilt -t {image} {context}";
/// browserd alone, its browsers' DevTools endpoints on the host's loopback.
const RUN_ON_HOST_NETWORK: &str =
    "podman run -d --name {daemon} --network host --shm-size=1g -v {volume}:/run/browserd {image}";
const STATUS: &str = "podman exec {daemon} browserctl {json} status";
const LAUNCH: &str = "podman exec {daemon} browserctl {json} launch";
const STOP: &str = "podman stop {daemon}";
/// browserd for a sidecar, with the manifest's arguments.
const RUN_FOR_SIDECAR: &str =
    "podman run -d --name {daemon} --shm-size=1g -v {volume}:/run/browserd {image} {daemon_args}";
/// The app, in the socket's group as its primary group (Kubernetes: runAsGroup)...
const RUN_APP: &str = "podman run -d --name {app} --user {uid}:{gid} --network container:{daemon} -v {volume}:/run/browserd --entrypoint sleep {image} infinity";
/// ...or as a supplementary one (Kubernetes: fsGroup, supplementalGroups).
const RUN_APP_SUPPLEMENTARY: &str = "podman run -d --name {app} --user {uid}:{uid} --group-add {fs_group} --network container:{daemon} -v {volume}:/run/browserd --entrypoint sleep {image} infinity";
const APP_LAUNCH: &str = "podman exec {app} browserctl {json} launch --tracking-id job-1";
const APP_LS: &str = "podman exec {app} browserctl {json} ls";
const APP_KILL: &str = "podman exec {app} browserctl {json} kill job-1";
/// A user outside the socket's group.
const RUN_STRANGER: &str = "podman run -d --name {stranger} --user {uid}:{uid} --network container:{daemon} -v {volume}:/run/browserd --entrypoint sleep {image} infinity";
const STRANGER_LS: &str = "podman exec {stranger} browserctl {json} ls";

/// Every template, for the README check.
const DOCUMENTED: [&str; 13] = [
    BUILD,
    RUN_ON_HOST_NETWORK,
    STATUS,
    LAUNCH,
    STOP,
    RUN_FOR_SIDECAR,
    RUN_APP,
    RUN_APP_SUPPLEMENTARY,
    APP_LAUNCH,
    APP_LS,
    APP_KILL,
    RUN_STRANGER,
    STRANGER_LS,
];

/// browserd's default grace: `podman stop` must be done well within it.
const GRACE: Duration = Duration::from_secs(5);
const SOCKET_DIR: &str = "/run/browserd";
const MANIFEST: &str = "deploy/kubernetes/browserd-sidecar.yaml";

// ----- The manifest -----

/// What the Kubernetes manifest sets for the sidecar pattern.
#[derive(Debug)]
struct Sidecar {
    /// The app container's runAsUser and runAsGroup.
    uid: u32,
    gid: u32,
    /// The pod's fsGroup, which Kubernetes adds to every container's supplementary groups.
    fs_group: u32,
    /// The browserd container's args.
    daemon_args: Vec<String>,
    /// Where each container mounts the socket volume.
    daemon_mount: String,
    app_mount: String,
    manifest: Value,
}

fn sidecar() -> Sidecar {
    let path = repo_root().join(MANIFEST);
    let text = std::fs::read_to_string(&path).expect("read the manifest");
    let manifest = yaml::parse(&text).unwrap_or_else(|e| panic!("{MANIFEST}: {e}"));
    let spec = &manifest["spec"];
    let container = |name: &str| -> Value {
        spec["containers"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("{MANIFEST} has no container {name}"))
            .clone()
    };
    let mount = |container: &Value, volume: &str| -> String {
        container["volumeMounts"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["name"] == volume))
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("{MANIFEST}: {} does not mount {volume}", container["name"]))
            .to_owned()
    };
    let number = |value: &Value, what: &str| -> u32 {
        value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or_else(|| panic!("{MANIFEST}: {what} is {value}, not an id"))
    };
    let (daemon, app) = (container("browserd"), container("app"));
    Sidecar {
        uid: number(&app["securityContext"]["runAsUser"], "runAsUser"),
        gid: number(&app["securityContext"]["runAsGroup"], "runAsGroup"),
        fs_group: number(&spec["securityContext"]["fsGroup"], "fsGroup"),
        daemon_args: daemon["args"]
            .as_array()
            .map(|args| {
                args.iter()
                    .map(|a| a.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        daemon_mount: mount(&daemon, "browserd-run"),
        app_mount: mount(&app, "browserd-run"),
        manifest,
    }
}

/// The placeholders as the README fills them.
fn readme_vars() -> BTreeMap<&'static str, String> {
    let sidecar = sidecar();
    BTreeMap::from([
        ("debian", BASE_IMAGE.to_owned()),
        ("image", "browserd".to_owned()),
        ("context", ".".to_owned()),
        ("daemon", "browserd".to_owned()),
        ("volume", "browserd-run".to_owned()),
        ("app", "app".to_owned()),
        ("stranger", "stranger".to_owned()),
        ("json", String::new()),
        ("uid", sidecar.uid.to_string()),
        ("gid", sidecar.gid.to_string()),
        ("fs_group", sidecar.fs_group.to_string()),
        ("daemon_args", sidecar.daemon_args.join(" ")),
    ])
}

// ----- One scene: an image, a daemon container, its volume, app containers -----

/// The resources of one test, named uniquely, removed on drop: containers first, then the
/// volume, then the image.
struct Scene {
    podman: &'static Podman,
    vars: BTreeMap<&'static str, String>,
    _removals: Vec<Removal<'static>>,
    _image: Image<'static>,
}

impl Scene {
    /// Builds the image (with [`BUILD`]) and names a daemon, its volume and two apps.
    fn new(podman: &'static Podman) -> Scene {
        let image = podman.build_image(BUILD);
        let sidecar = sidecar();
        let vars = BTreeMap::from([
            ("image", image.tag.clone()),
            ("daemon", podman.unique_name("browserd")),
            ("volume", podman.unique_name("run")),
            ("app", podman.unique_name("app")),
            ("stranger", podman.unique_name("stranger")),
            ("json", "--json".to_owned()),
            ("uid", sidecar.uid.to_string()),
            ("gid", sidecar.gid.to_string()),
            ("fs_group", sidecar.fs_group.to_string()),
            ("daemon_args", sidecar.daemon_args.join(" ")),
        ]);
        let removals = vec![
            podman.container_guard(&vars["app"]),
            podman.container_guard(&vars["stranger"]),
            podman.container_guard(&vars["daemon"]),
            podman.volume_guard(&vars["volume"]),
        ];
        Scene {
            podman,
            vars,
            _removals: removals,
            _image: image,
        }
    }

    fn name(&self, var: &str) -> &str {
        &self.vars[var]
    }

    /// Runs a documented command with this scene's names.
    #[track_caller]
    fn run(&self, template: &str) -> Output {
        let argv = render(template, &self.vars);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        self.podman.run(&args)
    }

    /// Runs a documented command that must succeed; returns its stdout.
    #[track_caller]
    fn ok(&self, template: &str) -> String {
        let output = self.run(template);
        assert!(
            output.status.success(),
            "`{}` failed ({}): {}{}",
            render(template, &self.vars).join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a documented `browserctl --json` command; returns its parsed result.
    #[track_caller]
    fn json<T: DeserializeOwned>(&self, template: &str) -> T {
        let stdout = self.ok(template);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Starts the daemon container with `template` and waits until it serves.
    #[track_caller]
    fn start_daemon(&self, template: &str) -> StatusResult {
        self.ok(template);
        wait_for(
            Duration::from_secs(20),
            "browserd serving in its container",
            || {
                let output = self.run(STATUS);
                output
                    .status
                    .success()
                    .then(|| serde_json::from_slice(&output.stdout).expect("status JSON"))
            },
        )
    }

    /// `podman exec <container> ARGS...`, which must succeed (test-only commands).
    #[track_caller]
    fn exec(&self, container: &str, args: &[&str]) -> String {
        let name = self.name(container).to_owned();
        let mut all = vec!["exec", name.as_str()];
        all.extend_from_slice(args);
        self.podman.ok(&all)
    }
}

/// Podman, or `None` after saying (once, past the test harness's output capture) why the
/// container tests are skipped.
fn podman_or_skip() -> Option<&'static Podman> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match Podman::get() {
        Ok(podman) => Some(podman),
        Err(reason) => {
            SAID.call_once(|| say(&format!("container tests skipped: {reason}")));
            None
        }
    }
}

/// The argv of a host process, if it still exists.
fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// Every host process in the PID namespace whose init is host pid `init`.
fn processes_in_namespace_of(init: i32) -> Vec<procfs::ProcInfo> {
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(target) = ns(init) else {
        return Vec::new();
    };
    procfs::all_processes()
        .into_iter()
        .filter(|p| ns(p.pid).as_ref() == Some(&target))
        .collect()
}

// ----- The tests -----

#[test]
fn the_image_builds_from_prebuilt_binaries_with_browserd_as_its_entrypoint() {
    let Some(podman) = podman_or_skip() else {
        return;
    };
    let scene = Scene::new(podman);
    let image = scene.name("image");
    let inspect = |format: &str| podman.ok(&["image", "inspect", "--format", format, image]);
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}"),
        r#"["/usr/local/bin/browserd"]"#
    );
    assert_eq!(inspect("{{.Config.StopSignal}}"), "SIGTERM");
    let env = inspect("{{json .Config.Env}}");
    for expected in [
        "BROWSERD_CONFIG=/etc/browserd.toml",
        "BROWSERD_SOCKET=/run/browserd/browserd.sock",
    ] {
        assert!(env.contains(expected), "{expected} not in {env}");
    }
    let size: u64 = inspect("{{.Size}}").parse().expect("image size");
    eprintln!(
        "image size: {} MB (with the binaries under test, {} build)",
        size / 1_000_000,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let version = podman.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "browserctl",
        image,
        "--version",
    ]);
    assert!(version.starts_with("browserctl "), "{version}");
}

#[test]
fn browserd_is_pid_1_and_reaps_the_orphans_of_its_sessions() {
    const ORPHANS: usize = 20;
    // Each orphan blocks on a FIFO until the test lets it exit; its parent subshell exits at
    // once, so the orphan is re-parented to PID 1.
    const ORPHANER: &str = "mkfifo /tmp/gate; i=0; while [ $i -lt 20 ]; do \
         (setsid sh -c 'read -r _ < /tmp/gate' &); i=$((i + 1)); done; exec sleep 600";
    let orphan_argv = ["sh", "-c", "read -r _ < /tmp/gate"];
    let Some(podman) = podman_or_skip() else {
        return;
    };
    let scene = Scene::new(podman);
    let status = scene.start_daemon(RUN_ON_HOST_NETWORK);
    assert_eq!(status.pid, 1, "browserd is PID 1 of its container");
    let daemon = podman.host_pid(scene.name("daemon"));

    let launched: LaunchResult = serde_json::from_str(&scene.exec(
        "daemon",
        &[
            "browserctl",
            "--json",
            "launch",
            "--type",
            "sandbox",
            "--",
            "sh",
            "-c",
            ORPHANER,
        ],
    ))
    .expect("launch JSON");
    let is_orphan = |p: &procfs::ProcInfo| {
        p.ppid == daemon && cmdline(p.pid).is_some_and(|argv| argv == orphan_argv)
    };
    wait_until(
        Duration::from_secs(15),
        format!("{ORPHANS} orphans re-parented to browserd (host pid {daemon})"),
        || {
            procfs::children_of(daemon)
                .iter()
                .filter(|p| is_orphan(p))
                .count()
                == ORPHANS
        },
    );

    scene.exec("daemon", &["sh", "-c", "echo go > /tmp/gate"]);
    wait_until(
        Duration::from_secs(15),
        "every orphan exited and reaped by browserd",
        || {
            let children = procfs::children_of(daemon);
            !children.iter().any(|p| is_orphan(p) || p.is_zombie())
        },
    );
    let killed: TerminateResult = serde_json::from_str(&scene.exec(
        "daemon",
        &["browserctl", "--json", "kill", launched.session.id.as_str()],
    ))
    .expect("kill JSON");
    assert_eq!(killed.terminated, [launched.session.id.to_string()]);
    assert!(procfs::zombie_children_of(daemon).is_empty());
}

#[test]
fn a_browser_session_in_the_container_answers_devtools_from_the_host() {
    let Some(podman) = podman_or_skip() else {
        return;
    };
    let scene = Scene::new(podman);
    scene.start_daemon(RUN_ON_HOST_NETWORK);
    let launched: LaunchResult = scene.json(LAUNCH);
    let endpoint = launched
        .session
        .ws_endpoint
        .expect("a browser has an endpoint");

    // From the host: the endpoint answers, and the browser loads a page the host serves.
    let mut cdp = Cdp::connect(&endpoint).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    let product = cdp.product().expect("Browser.getVersion");
    assert!(product.contains("Chrome"), "{product}");
    let server = PageServer::start("served by the host");
    let page = cdp.open_page(&server.url()).expect("open a page");
    cdp.wait_title(&page, "served by the host", Duration::from_secs(15));

    let killed: TerminateResult =
        serde_json::from_str(&scene.exec("daemon", &["browserctl", "--json", "kill", "all"]))
            .expect("kill JSON");
    assert_eq!(killed.terminated, [launched.session.id.to_string()]);
}

#[test]
fn podman_stop_exits_0_within_the_grace_and_leaves_nothing() {
    let Some(podman) = podman_or_skip() else {
        return;
    };
    let scene = Scene::new(podman);
    scene.start_daemon(RUN_ON_HOST_NETWORK);
    let browser: LaunchResult = scene.json(LAUNCH);
    let sandbox: LaunchResult = serde_json::from_str(&scene.exec(
        "daemon",
        &[
            "browserctl",
            "--json",
            "launch",
            "--type",
            "sandbox",
            "--",
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 600 & wait",
        ],
    ))
    .expect("launch JSON");
    let init = podman.host_pid(scene.name("daemon"));
    let before: BTreeSet<procfs::ProcId> = processes_in_namespace_of(init)
        .iter()
        .map(procfs::ProcInfo::id)
        .collect();
    assert!(
        before.len() > 3,
        "browserd, Chromium and the sandbox: {before:?}"
    );

    let start = Instant::now();
    scene.ok(STOP);
    let took = start.elapsed();
    eprintln!("podman stop took {took:?}");
    assert!(
        took < GRACE,
        "podman stop took {took:?}, more than the grace ({GRACE:?})"
    );
    let state = podman.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        scene.name("daemon"),
    ]);
    assert_eq!(state, "exited 0", "browserd's exit");
    let left: Vec<_> = before.iter().filter(|id| id.current().is_some()).collect();
    assert!(left.is_empty(), "processes of the container left: {left:?}");

    // browserd ended each session itself (SIGTERM, a browser through CDP first), before it
    // exited: each exited 0, where the runtime's SIGKILL would have left a signal.
    let output = podman.run(&["logs", scene.name("daemon")]);
    let logs = [output.stdout, output.stderr].concat();
    let logs = String::from_utf8_lossy(&logs);
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    for session in [&browser.session, &sandbox.session] {
        let exited = lines
            .iter()
            .find(|l| {
                l["fields"]["message"] == "session exited"
                    && l["fields"]["session"] == session.id.as_str()
            })
            .unwrap_or_else(|| panic!("no exit of {} in the log:\n{logs}", session.id));
        assert_eq!(exited["fields"]["exit"], "exit 0", "{exited}");
    }
    let last = lines.last().map(|l| l["fields"]["message"].clone());
    assert_eq!(last, Some(Value::from("browserd stopped")), "{logs}");
}

/// A sidecar in the socket's group launches, lists and kills a browser through the socket
/// volume, and reaches its DevTools endpoint over the shared network.
fn a_sidecar_launches_lists_and_kills(run_app: &str) {
    let Some(podman) = podman_or_skip() else {
        return;
    };
    let scene = Scene::new(podman);
    let status = scene.start_daemon(RUN_FOR_SIDECAR);
    let sidecar = sidecar();
    if let Some(max) = sidecar
        .daemon_args
        .iter()
        .position(|a| a == "--max-sessions")
    {
        let expected: u32 = sidecar.daemon_args[max + 1].parse().expect("a number");
        assert_eq!(
            status.limits.max_sessions, expected,
            "the manifest's args apply"
        );
    }
    // The image's settings still apply under the manifest's args: the socket's group.
    let socket = format!("{SOCKET_DIR}/browserd.sock");
    let owner = scene.exec("daemon", &["stat", "-c", "%a %u %g", &socket]);
    assert_eq!(
        owner.trim(),
        format!("660 0 {}", sidecar.gid),
        "the socket file"
    );

    scene.ok(run_app);
    let launched: LaunchResult = scene.json(APP_LAUNCH);
    let session = launched.session;
    assert_eq!(session.state, SessionState::Running);
    let port = session
        .ws_endpoint
        .as_deref()
        .and_then(|e| e.strip_prefix("ws://127.0.0.1:"))
        .and_then(|rest| rest.split('/').next())
        .expect("a loopback endpoint")
        .to_owned();
    let version = scene.exec(
        "app",
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/$0; \
             printf 'GET /json/version HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3; \
             while read -r line; do echo \"$line\"; [ \"$line\" = '}' ] && break; done <&3",
            &port,
        ],
    );
    assert!(version.contains("webSocketDebuggerUrl"), "{version}");

    let listed: SessionsResult = scene.json(APP_LS);
    assert!(
        listed
            .sessions
            .iter()
            .any(|s| s.id == session.id && s.state == SessionState::Running),
        "{listed:?}"
    );
    let killed: TerminateResult = scene.json(APP_KILL);
    assert_eq!(killed.terminated, [session.id.to_string()]);
    assert!(killed.failed.is_empty(), "{killed:?}");
    let listed: SessionsResult = scene.json(APP_LS);
    let after = listed
        .sessions
        .iter()
        .find(|s| s.id == session.id)
        .expect("still listed");
    assert_eq!(after.state, SessionState::Exited);
    assert_eq!(after.exit, Some(ExitStatus::Code(0)), "closed through CDP");
}

#[test]
fn a_sidecar_whose_primary_group_is_the_socket_group_launches_lists_and_kills() {
    a_sidecar_launches_lists_and_kills(RUN_APP);
}

#[test]
fn a_sidecar_with_the_socket_group_only_supplementary_launches_lists_and_kills() {
    a_sidecar_launches_lists_and_kills(RUN_APP_SUPPLEMENTARY);
}

#[test]
fn a_sidecar_outside_the_socket_group_is_refused_with_permission_denied() {
    let Some(podman) = podman_or_skip() else {
        return;
    };
    let scene = Scene::new(podman);
    scene.start_daemon(RUN_FOR_SIDECAR);
    scene.ok(RUN_STRANGER);
    let sidecar = sidecar();

    let output = scene.run(STRANGER_LS);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let error: Value = serde_json::from_slice(&output.stdout).expect("one JSON error");
    assert_eq!(error["code"], "permission_denied", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    for expected in [
        "the socket file (mode 0660, owner uid 0, group ".to_owned(),
        format!("{}(browserd))", sidecar.gid),
        format!("does not let uid {}", sidecar.uid),
        "the kernel refused before browserd saw the connection".to_owned(),
    ] {
        assert!(message.contains(&expected), "{expected:?} not in {message}");
    }

    // Without --json: one sentence that says what to do, not a bare "os error 13".
    let name = scene.name("stranger").to_owned();
    let output = podman.run(&["exec", &name, "browserctl", "ls"]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("browserctl: permission denied connecting to browserd at /run/browserd/browserd.sock: the socket file"),
        "{stderr}"
    );
    assert!(!stderr.contains("os error"), "{stderr}");
}

#[test]
fn the_kubernetes_manifest_sets_what_the_sidecar_tests_prove() {
    let sidecar = sidecar();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("groupadd --system --gid {} browserd", sidecar.gid)),
        "the app's runAsGroup ({}) is the image's browserd group",
        sidecar.gid
    );
    assert_eq!(
        sidecar.fs_group, sidecar.gid,
        "fsGroup is the socket's group too"
    );
    assert_ne!(sidecar.uid, 0, "the app runs as a non-root user");
    assert!(dockerfile.contains(&format!("BROWSERD_SOCKET={SOCKET_DIR}/browserd.sock")));
    assert_eq!(sidecar.daemon_mount, SOCKET_DIR, "browserd's socket volume");
    assert_eq!(sidecar.app_mount, SOCKET_DIR, "the app's socket volume");
    let spec = &sidecar.manifest["spec"];
    let volume = |name: &str| -> Value {
        spec["volumes"]
            .as_array()
            .and_then(|all| all.iter().find(|v| v["name"] == name))
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    assert!(
        volume("browserd-run")["emptyDir"].is_object(),
        "a pod-local volume"
    );
    assert_eq!(
        volume("dshm")["emptyDir"]["medium"],
        "Memory",
        "--shm-size's stand-in"
    );
    let app = spec["containers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "app"))
        .expect("the app container");
    assert_eq!(app["securityContext"]["runAsNonRoot"], true);
    assert_eq!(app["command"], serde_json::json!(["sleep", "infinity"]));
    let socket_env = app["env"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == "BROWSERD_SOCKET"))
        .map(|e| e["value"].clone());
    assert_eq!(
        socket_env,
        Some(Value::from(format!("{SOCKET_DIR}/browserd.sock")))
    );
}

#[test]
fn the_readme_shows_the_commands_these_tests_run() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let shown: BTreeSet<String> = readme
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("podman "))
        .map(|line| match line.find(" #") {
            Some(comment) => line[..comment].trim_end().to_owned(),
            None => line.to_owned(),
        })
        .collect();
    let vars = readme_vars();
    let tested: BTreeSet<String> = DOCUMENTED
        .iter()
        .map(|template| render(template, &vars).join(" "))
        .collect();
    let untested: Vec<_> = shown.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "the README shows commands no test runs: {untested:#?}"
    );
    let missing: Vec<_> = tested.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "the README lacks commands the tests run: {missing:#?}"
    );
}
