//! Podman for the container tests: whether it can run here (if not, why, for the skip
//! message), the browserd image built from the binaries under test, and containers, volumes
//! and images named uniquely per run that are removed when dropped, even when a test panics.
//!
//! Only two images outlive a run, as caches: the Debian base `scripts/container-base` makes
//! (so no registry is needed) and the Dockerfile's `runtime-base` stage (Chromium
//! installed). `podman rmi localhost/browserd-test-cache:runtime-base
//! localhost/debian:bookworm-slim` drops them.

use crate::command::output_within;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The Debian base the image builds on (`DEBIAN_IMAGE`), made by `scripts/container-base`
/// (which `scripts/container-prepare` runs).
pub const BASE_IMAGE: &str = "localhost/debian:bookworm-slim";
/// The Dockerfile's `runtime-base` stage, tagged by `scripts/container-prepare` so that its
/// layers stay cached between runs.
pub const CACHE_IMAGE: &str = "localhost/browserd-test-cache:runtime-base";
/// Every container, volume and image a test makes is named `browserd-test-<pid>-<n>`.
const PREFIX: &str = "browserd-test-";
/// How long a podman command may take; a build from cold installs Chromium.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// The workspace root (the tests crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// Podman, set up to build and run here.
pub struct Podman {
    /// A `CONTAINERS_CONF` of our own, where the host's settings keep containers from starting.
    conf: Option<PathBuf>,
}

impl Podman {
    /// Podman ready to use, or why it cannot be used here (the tests print it and skip).
    /// Set up once per test binary: stale resources of killed runs swept, the cached images
    /// prepared, a container started as a probe.
    pub fn get() -> Result<&'static Podman, String> {
        static PODMAN: OnceLock<Result<Podman, String>> = OnceLock::new();
        PODMAN
            .get_or_init(Podman::set_up)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn set_up() -> Result<Podman, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the container tests need root (rootful Podman, debootstrap)".into());
        }
        for tool in ["podman", "debootstrap"] {
            if !on_path(tool) {
                return Err(format!(
                    "{tool} is not installed (scripts/deps --test installs it)"
                ));
            }
        }
        let mut podman = Podman { conf: None };
        let info = podman.run(&["info"]);
        if !info.status.success() {
            return Err(format!(
                "Podman does not work here: {}",
                String::from_utf8_lossy(&info.stderr).trim()
            ));
        }
        podman.sweep_stale();
        if !podman
            .run(&["image", "exists", CACHE_IMAGE])
            .status
            .success()
        {
            say(&format!(
                "container tests: making {BASE_IMAGE} and {CACHE_IMAGE} (once, ~2 min)"
            ));
        }
        let script = repo_root().join("scripts/container-prepare");
        let made = output_within(&mut Command::new(&script), BUILD_TIMEOUT);
        assert!(
            made.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&made.stderr)
        );
        let probe = ["run", "--rm", BASE_IMAGE, "true"];
        let first = podman.run(&probe);
        if first.status.success() {
            return Ok(podman);
        }
        // Podman's default ulimits (nofile 1048576) exceed the hard limit of some hosts, and
        // runc then fails every container; without them, containers get the host's limits.
        let conf = crate::browserd_bin().with_file_name("container-tests.conf");
        fs::write(&conf, "[containers]\ndefault_ulimits = []\n").expect("write containers.conf");
        podman.conf = Some(conf);
        let second = podman.run(&probe);
        if second.status.success() {
            say(&format!(
                "container tests: running containers without Podman's default ulimits, which \
                 this host refuses ({})",
                String::from_utf8_lossy(&first.stderr).trim()
            ));
            return Ok(podman);
        }
        Err(format!(
            "Podman cannot run a container here: {}",
            String::from_utf8_lossy(&second.stderr).trim()
        ))
    }

    /// `podman ARGS...` with this host's settings, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command.args(args);
        if let Some(conf) = &self.conf {
            command.env("CONTAINERS_CONF", conf);
        }
        // RUN steps in a chroot: no cgroup of their own needed (hybrid cgroup hosts refuse).
        command.env("BUILDAH_ISOLATION", "chroot");
        command
    }

    /// Runs `podman ARGS...` to its end.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Output {
        output_within(&mut self.command(args), COMMAND_TIMEOUT)
    }

    /// Runs `podman ARGS...`, which must succeed; returns its stdout, trimmed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "podman {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A name no other run or test uses: `browserd-test-<pid>-<n>-<what>`.
    pub fn unique_name(&self, what: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("{PREFIX}{}-{n}-{what}", std::process::id())
    }

    /// Removes what earlier runs that were killed left behind: resources named after a test
    /// process that no longer exists.
    fn sweep_stale(&self) {
        let stale = |name: &str| {
            let name = name.trim_start_matches("localhost/");
            let Some(rest) = name.strip_prefix(PREFIX) else {
                return false;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
            pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        let list = |args: &[&str]| -> Vec<String> {
            let output = self.run(args);
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(str::to_owned)
                .filter(|name| stale(name))
                .collect()
        };
        for name in list(&["ps", "-a", "--format", "{{.Names}}"]) {
            self.run(&["rm", "-f", "-t", "0", "--depend", &name]);
        }
        for name in list(&["volume", "ls", "--format", "{{.Name}}"]) {
            self.run(&["volume", "rm", "-f", &name]);
        }
        for name in list(&["images", "--format", "{{.Repository}}"]) {
            self.run(&["rmi", "-f", &name]);
        }
    }

    /// The image of the binaries under test, under a tag of its own. The first call of a run
    /// builds it with the command the README shows: `build` is that command's template (see
    /// [`render`]), run in a build context holding the Dockerfile, `.dockerignore`, the
    /// image's settings and the binaries as `target/release/*`, where the Dockerfile's
    /// `prebuilt` target expects them. Later calls tag the same image while any earlier tag
    /// still holds it.
    #[track_caller]
    pub fn build_image(&self, build: &str) -> Image<'_> {
        // One build at a time: the first fills the layer cache, the others reuse its image.
        static BUILT: Mutex<Option<String>> = Mutex::new(None);
        let mut built = BUILT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let tag = format!("localhost/{}", self.unique_name("image"));
        let image = Image {
            podman: self,
            tag: tag.clone(),
        };
        if let Some(id) = built.as_deref() {
            if self.run(&["tag", id, &tag]).status.success() {
                return image;
            }
        }
        let context = BuildContext::assemble();
        let vars = BTreeMap::from([
            ("debian", BASE_IMAGE.to_owned()),
            ("image", tag.clone()),
            ("context", context.path().display().to_string()),
        ]);
        let argv = render(build, &vars);
        assert_eq!(argv[0], "podman", "{build}");
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let mut command = self.command(&args);
        command.current_dir(context.path());
        let output = output_within(&mut command, BUILD_TIMEOUT);
        assert!(
            output.status.success(),
            "{} failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        *built = Some(self.ok(&["image", "inspect", "--format", "{{.Id}}", &tag]));
        image
    }

    /// A container named `name`, removed (with any container that joined its network) when
    /// the guard drops. Make the guard before starting the container.
    pub fn container_guard(&self, name: &str) -> Removal<'_> {
        Removal {
            podman: self,
            args: vec!["rm", "-f", "-t", "0", "--depend"],
            name: name.to_owned(),
        }
    }

    /// A volume named `name`, removed when the guard drops (after the containers using it,
    /// if their guards were made after this one).
    pub fn volume_guard(&self, name: &str) -> Removal<'_> {
        Removal {
            podman: self,
            args: vec!["volume", "rm", "-f"],
            name: name.to_owned(),
        }
    }

    /// The host pid of the container's PID 1.
    #[track_caller]
    pub fn host_pid(&self, container: &str) -> i32 {
        let pid = self.ok(&["inspect", "--format", "{{.State.Pid}}", container]);
        pid.parse()
            .unwrap_or_else(|_| panic!("no pid for {container}: {pid}"))
    }
}

/// An image built for one test; removed (untagged, if another test's tag shares it) on drop.
pub struct Image<'a> {
    podman: &'a Podman,
    pub tag: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        self.podman.run(&["rmi", &self.tag]);
    }
}

/// Removes a container or volume when dropped.
pub struct Removal<'a> {
    podman: &'a Podman,
    args: Vec<&'static str>,
    name: String,
}

impl Drop for Removal<'_> {
    fn drop(&mut self) {
        let mut args = self.args.clone();
        args.push(&self.name);
        let output = self.podman.run(&args);
        if !output.status.success() {
            eprintln!(
                "could not remove {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// The build context of the `prebuilt` target: the repository's Dockerfile, `.dockerignore`
/// and image settings, and the binaries under test, in a temp dir.
struct BuildContext(tempfile::TempDir);

impl BuildContext {
    fn assemble() -> BuildContext {
        let dir = tempfile::Builder::new()
            .prefix("browserd-image-")
            .tempdir()
            .expect("temp dir for the build context");
        let root = repo_root();
        for file in [
            "Dockerfile",
            ".dockerignore",
            "deploy/container/browserd.toml",
        ] {
            place(&root.join(file), &dir.path().join(file));
        }
        place(
            &crate::browserd_bin(),
            &dir.path().join("target/release/browserd"),
        );
        place(
            &crate::browserctl_bin(),
            &dir.path().join("target/release/browserctl"),
        );
        BuildContext(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Links `from` at `to` (a copy where a link cannot be made), creating `to`'s directory.
fn place(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().expect("a file in a dir")).expect("create context dir");
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copy {} into the context: {e}", from.display()));
    }
}

/// A command template with `{name}` placeholders, filled from `vars` and split into words
/// (so an empty value leaves no trace). The same templates render the README's commands.
#[track_caller]
pub fn render(template: &str, vars: &BTreeMap<&str, String>) -> Vec<String> {
    let mut text = template.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    assert!(
        !text.contains('{'),
        "unfilled placeholder in `{text}` (vars: {vars:?})"
    );
    text.split_whitespace().map(str::to_owned).collect()
}

/// Writes `line` to stderr past the test harness's output capture, so that it shows in every
/// run (a skip, a slow first run, a host quirk worked around), not only in failing ones.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}
