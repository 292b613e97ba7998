//! The benchmark still runs: `bench` with tiny parameters completes, leaves nothing running,
//! and writes a JSON report with every scenario. Its numbers are never asserted — performance
//! is measured by `cargo run --release -p browserd-tests --bin bench`, not tested.

use std::process::Command;
use std::time::Instant;

/// Every row the report must carry.
const SCENARIOS: &[&str] = &[
    "launch",
    "bulk_polite",
    "bulk_stubborn",
    "bulk_stubborn_small",
    "kill_one_median",
    "kill_one_p99",
    "status_median",
    "natural_exit_median",
    "rss_empty",
    "rss_at_n",
    "idle_cpu",
    "launch_tmpfs",
    "journal_cost",
    "reload_op",
    "reload_op_answer",
    "reload_sighup",
    "reload_wait_median",
    "reload_wait_max",
    "restart_adopt",
    "restart_empty",
    "bulk_adopted",
    "first_signals",
    "status_during_bulk",
    "kill_one_over_start",
    "kill_one_after_idle",
    "kill_one_after_idle_over_warm_start",
    "ls_median",
    "ls_all_median",
    "queue_admission_median",
    "queue_admission_p99",
    "queue_after_kill_median",
    "socket_kill_one_median",
    "http_kill_one_median",
    "http_kill_one_over_socket",
    "socket_bulk",
    "http_bulk",
    "http_bulk_over_socket",
    "bulk_subscribed",
    "subscriber_events",
];

#[test]
fn the_bench_runs_every_scenario_and_reports_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let start = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "--sessions",
            "20",
            "--repeat",
            "1",
            "--samples",
            "5",
            "--grace-ms",
            "200",
            "--idle-ms",
            "1000",
            // The test suite builds the binaries before it runs; a source edited since is not
            // this test's concern.
            "--allow-stale",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run the bench");
    let took = start.elapsed();
    assert!(
        output.status.success(),
        "bench failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // How long it took is the bench's business, not this test's: it is only printed.
    eprintln!("the smoke run took {took:?}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report exists"))
            .expect("the report is JSON");
    let rows = report["rows"].as_array().expect("rows");
    for key in SCENARIOS {
        let row = rows
            .iter()
            .find(|r| r["key"] == *key)
            .unwrap_or_else(|| panic!("no `{key}` row in {rows:#?}"));
        assert!(
            row["browserd"].is_number(),
            "`{key}` has no browserd value: {row}"
        );
    }
    let bare = rows
        .iter()
        .find(|r| r["key"] == "bare_start_after_idle")
        .unwrap_or_else(|| panic!("no `bare_start_after_idle` row in {rows:#?}"));
    assert!(bare["baseline"].is_number(), "{bare}");
    assert_eq!(report["leftover_processes"], 0, "{report:#}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("| scenario"), "no table printed:\n{table}");
}
