//! `browserctl`: parse the command line, send one request to browserd, print the answer.
//! Each step lives in its own module; this file only wires them together.

mod cli;
mod client;
mod clock;
mod duration;
mod events;
mod exit;
mod render;

use clap::Parser;
use exit::LocalFailure;
use render::Report;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let report = run(std::env::args_os().collect());
    emit(&mut std::io::stdout().lock(), &report.stdout);
    emit(&mut std::io::stderr().lock(), &report.stderr);
    report.exit.into()
}

/// Everything one invocation prints, and how it exits. With `--json`, whatever happens is
/// exactly one JSON document on stdout.
fn run(args: Vec<OsString>) -> Report {
    let json = asks_for_json(&args);
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => return clap_report(&error, json),
    };
    let socket = cli.socket_path();
    if let cli::Command::Events(args) = &cli.command {
        return match events::follow(&socket, args.watch(), cli.json) {
            Ok(exit) => Report {
                stdout: String::new(),
                stderr: String::new(),
                exit,
            },
            Err(report) => report,
        };
    }
    let reload_timeout = cli.command.reload_timeout();
    let request = match cli.command.into_request() {
        Ok(request) => request,
        Err(error) => return render::local_failure(LocalFailure::Usage, &error.0, cli.json),
    };
    let answer = match client::ask(&socket, &request) {
        Ok(answer) => answer,
        Err(error) => return render::local_failure(error.failure(), &error.to_string(), cli.json),
    };
    if !cli.json {
        if let Some(table) = render::listing(&request, &answer) {
            return table;
        }
    }
    let response = match client::decode_response(&socket, &answer) {
        Ok(response) => response,
        Err(error) => return render::local_failure(error.failure(), &error.to_string(), cli.json),
    };
    // Only a reload's answer is looked into here (it is not copied for any other).
    let Some((timeout, reloads)) =
        reload_timeout.and_then(|timeout| Some((timeout, accepted_reload(&response)?)))
    else {
        return render::report(&request, response, cli.json);
    };
    match client::wait_reloaded(&socket, reloads, timeout) {
        Ok(status) => render::reloaded(&status, cli.json),
        Err(error) => render::local_failure(error.failure(), &error.to_string(), cli.json),
    }
}

/// The `reloads` count a successful `reload` answer promises.
fn accepted_reload(response: &browserd_proto::RawResponse) -> Option<u64> {
    let result = response.result.as_ref().filter(|_| response.ok)?;
    serde_json::from_str::<browserd_proto::ReloadResult>(result.get())
        .ok()
        .map(|r| r.reloads)
}

/// Whether `--json` was given, judged from the raw arguments, for when clap could not parse
/// them: anything before a lone `--` that is exactly `--json`.
fn asks_for_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json")
}

/// Clap's own outcome: `--help` and `--version` print as usual; a usage error becomes an
/// `invalid_request` object with `--json`, and clap's usual message otherwise.
fn clap_report(error: &clap::Error, json: bool) -> Report {
    let rendered = error.render();
    // Clap colours its text for a terminal, and only for one.
    let styled = |terminal: bool| match terminal {
        true => rendered.ansi().to_string(),
        false => rendered.to_string(),
    };
    if error.exit_code() == 0 {
        return Report {
            stdout: styled(std::io::stdout().is_terminal()),
            stderr: String::new(),
            exit: exit::Exit::Done,
        };
    }
    if json {
        let text = rendered.to_string();
        let message = text.trim().trim_start_matches("error: ");
        return render::local_failure(LocalFailure::Usage, message, true);
    }
    Report {
        stdout: String::new(),
        stderr: styled(std::io::stderr().is_terminal()),
        exit: exit::Exit::Usage,
    }
}

/// Writes without panicking when the reader went away (`browserctl ls | head -1`): the
/// exit status still reports what the daemon did.
fn emit(stream: &mut impl Write, text: &str) {
    let _ = stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("browserctl")
            .chain(list.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// Runs browserctl in-process and parses its stdout as the one JSON document it must be.
    #[track_caller]
    fn json_run(list: &[&str]) -> (serde_json::Value, exit::Exit) {
        let report = run(args(list));
        assert!(report.stderr.is_empty(), "{report:?}");
        assert_eq!(report.stdout.matches('\n').count(), 1, "{report:?}");
        let value = serde_json::from_str(&report.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {report:?}"));
        (value, report.exit)
    }

    #[test]
    fn json_is_detected_before_a_double_dash_only() {
        assert!(asks_for_json(&args(&["--json", "status"])));
        assert!(asks_for_json(&args(&["ls", "--json", "--bogus"])));
        assert!(!asks_for_json(&args(&["launch", "--", "echo", "--json"])));
        assert!(!asks_for_json(&args(&["--jsonx"])));
    }

    #[test]
    fn clap_errors_are_one_invalid_request_object_with_json() {
        let (value, exit) = json_run(&["--json", "--no-such-flag", "status"]);
        assert_eq!(exit, exit::Exit::Usage);
        assert_eq!(value["code"], "invalid_request");
        let message = value["message"].as_str().unwrap();
        assert!(message.contains("--no-such-flag"), "{message}");
        assert!(!message.starts_with("error:"), "{message}");

        let (value, exit) = json_run(&["--json", "launch", "--ttl", "10000y"]);
        assert_eq!(exit, exit::Exit::Usage);
        assert!(
            value["message"].as_str().unwrap().contains("100years"),
            "{value}"
        );
    }

    #[test]
    fn clap_errors_without_json_go_to_stderr() {
        let report = run(args(&["--no-such-flag"]));
        assert!(report.stdout.is_empty());
        assert!(report.stderr.contains("--no-such-flag"), "{report:?}");
        assert_eq!(report.exit, exit::Exit::Usage);
    }

    #[test]
    fn help_and_version_are_not_errors() {
        let report = run(args(&["--json", "--version"]));
        assert_eq!(report.exit, exit::Exit::Done);
        assert!(report.stdout.starts_with("browserctl "), "{report:?}");
    }

    #[test]
    fn usage_problems_found_after_parsing_are_json_objects() {
        let (value, exit) = json_run(&["--json", "launch", "--type", "sandbox"]);
        assert_eq!(exit, exit::Exit::Usage);
        assert_eq!(value["code"], "invalid_request");
        let (value, exit) = json_run(&["--json", "terminate", "--request", "/nonexistent/b.json"]);
        assert_eq!(exit, exit::Exit::Usage);
        assert!(value["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/b.json"));
    }

    #[test]
    fn an_unreachable_daemon_is_a_json_object_with_its_own_code() {
        let (value, exit) = json_run(&["--json", "--socket", "/nonexistent/d.sock", "status"]);
        assert_eq!(exit, exit::Exit::Unreachable);
        assert_eq!(value["code"], "unreachable");
        assert!(value["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/d.sock"));
    }
}
