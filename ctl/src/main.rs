//! `browserctl`: parse the command line, send one request to browserd, print the answer.
//! Each step lives in its own module; this file only wires them together.

mod cli;
mod client;
mod clock;
mod exit;
mod render;

use clap::Parser;
use exit::Exit;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Clap prints its own usage errors and exits 2 (0 for --help / --version).
    let cli = cli::Cli::parse();
    let socket = cli.socket_path();
    let request = match cli.command.into_request() {
        Ok(request) => request,
        Err(error) => return fail(&format!("browserctl: {error}\n"), Exit::Usage),
    };
    let response = match client::call(&socket, &request) {
        Ok(response) => response,
        Err(error) => return fail(&format!("browserctl: {error}\n"), Exit::Unreachable),
    };
    let report = render::report(&request, response, cli.json);
    emit(&mut std::io::stdout().lock(), &report.stdout);
    emit(&mut std::io::stderr().lock(), &report.stderr);
    report.exit.into()
}

fn fail(message: &str, exit: Exit) -> ExitCode {
    emit(&mut std::io::stderr().lock(), message);
    exit.into()
}

/// Writes without panicking when the reader went away (`browserctl ls | head -1`): the
/// exit status still reports what the daemon did.
fn emit(stream: &mut impl Write, text: &str) {
    let _ = stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush());
}
