//! `bulk_terminate`: the Chaser bulk-terminate body. Selection by ids (session or tracking
//! ids), by workspaces, or `all` (optionally filtered by `session_type`).

use browserd_proto::{BulkTerminate, ErrorCode, Launch, SessionState, SessionType};
use browserd_tests::{assert_terminated_exactly, failure_for, DaemonGuard, Fixture};
use serde_json::json;

fn in_workspace(fixture: &Fixture, workspace: &str) -> Launch {
    Launch {
        workspace: Some(workspace.parse().unwrap()),
        ..fixture.launch()
    }
}

#[test]
fn bulk_terminate_by_ids_accepts_session_and_tracking_ids() {
    let d = DaemonGuard::start();
    let fixture = Fixture::polite();
    let (a, _) = d.spawn(&fixture);
    let (b, _) = d.spawn_with(
        &fixture,
        Launch {
            tracking_id: Some("bulk-b".parse().unwrap()),
            ..fixture.launch()
        },
    );
    let (c, c_tree) = d.spawn(&fixture);

    let result = d.bulk(BulkTerminate {
        ids: Some(vec![
            a.id.as_str().parse().unwrap(),
            "bulk-b".parse().unwrap(),
        ]),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&a.id, &b.id]);
    d.assert_session_gone(&a.id);
    d.assert_session_gone(&b.id);
    d.assert_tree_alive(&c_tree);

    d.kill(c.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn bulk_terminate_by_workspace_spares_other_workspaces() {
    let d = DaemonGuard::start();
    let fixture = Fixture::polite();
    let (a1, _) = d.spawn_with(&fixture, in_workspace(&fixture, "ws-a"));
    let (a2, _) = d.spawn_with(&fixture, in_workspace(&fixture, "ws-a"));
    let (b, b_tree) = d.spawn_with(&fixture, in_workspace(&fixture, "ws-b"));
    let (default, default_tree) = d.spawn(&fixture);

    let result = d.bulk(BulkTerminate {
        workspaces: Some(vec!["ws-a".parse().unwrap()]),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&a1.id, &a2.id]);
    d.assert_session_gone(&a1.id);
    d.assert_session_gone(&a2.id);
    d.assert_tree_alive(&b_tree);
    d.assert_tree_alive(&default_tree);

    d.kill("all", false, None);
    d.assert_session_gone(&b.id);
    d.assert_session_gone(&default.id);
}

#[test]
fn bulk_terminate_selects_the_union_of_ids_and_workspaces() {
    let d = DaemonGuard::start();
    let fixture = Fixture::sleeper();
    let (a, _) = d.spawn_with(&fixture, in_workspace(&fixture, "ws-a"));
    let (b, _) = d.spawn_with(&fixture, in_workspace(&fixture, "ws-b"));
    let (c, c_tree) = d.spawn_with(&fixture, in_workspace(&fixture, "ws-b"));

    let result = d.bulk(BulkTerminate {
        ids: Some(vec![b.id.as_str().parse().unwrap()]),
        workspaces: Some(vec!["ws-a".parse().unwrap()]),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&a.id, &b.id]);
    d.assert_tree_alive(&c_tree);
    d.kill("all", false, None);
    d.assert_session_gone(&c.id);
    d.assert_all_sessions_gone();
}

#[test]
fn bulk_terminate_all_of_one_session_type_spares_the_other_type() {
    let d = DaemonGuard::start();
    let (sandbox1, _) = d.spawn(&Fixture::polite());
    let (sandbox2, _) = d.spawn(&Fixture::deep());
    let (browser, browser_tree) = d.spawn(&Fixture::fake_browser());
    assert_eq!(browser.session_type, SessionType::Browser);

    let result = d.bulk(BulkTerminate {
        all: Some(true),
        session_type: Some(SessionType::Sandbox),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&sandbox1.id, &sandbox2.id]);
    d.assert_session_gone(&sandbox1.id);
    d.assert_session_gone(&sandbox2.id);
    d.assert_tree_alive(&browser_tree);
    assert_eq!(d.session(&browser.id).state, SessionState::Running);

    let result = d.bulk(BulkTerminate {
        all: Some(true),
        session_type: Some(SessionType::Browser),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&browser.id]);
    d.assert_all_sessions_gone();
}

#[test]
fn bulk_terminate_all_without_session_type_terminates_every_type() {
    let d = DaemonGuard::start();
    let (sandbox, _) = d.spawn(&Fixture::polite());
    let (browser, _) = d.spawn(&Fixture::fake_browser());

    let result = d.bulk(BulkTerminate {
        all: Some(true),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&sandbox.id, &browser.id]);
    d.assert_all_sessions_gone();
}

#[test]
fn bulk_terminate_all_ignores_ids_and_workspaces() {
    let d = DaemonGuard::start();
    let (a, _) = d.spawn(&Fixture::sleeper());
    let (b, _) = d.spawn(&Fixture::sleeper());

    let result = d.bulk(BulkTerminate {
        all: Some(true),
        ids: Some(vec!["no-such-session".parse().unwrap()]),
        workspaces: Some(vec!["no-such-workspace".parse().unwrap()]),
        ..Default::default()
    });

    assert_terminated_exactly(&result, &[&a.id, &b.id]);
    d.assert_all_sessions_gone();
}

#[test]
fn bulk_terminate_that_selects_nothing_is_an_invalid_request() {
    let d = DaemonGuard::start();
    let (session, tree) = d.spawn(&Fixture::polite());
    let mut client = d.client();

    for body in [
        json!({"op": "bulk_terminate"}),
        json!({"op": "bulk_terminate", "all": false}),
        json!({"op": "bulk_terminate", "all": null, "ids": [], "workspaces": []}),
        json!({"op": "bulk_terminate", "force": true, "session_type": "sandbox"}),
    ] {
        let response = client.request_json(&body);
        let error = response
            .error
            .unwrap_or_else(|| panic!("{body} should be refused"));
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{body}: {error}");
    }

    d.assert_tree_alive(&tree);
    d.kill(session.id.as_str(), false, None);
    d.assert_all_sessions_gone();
}

#[test]
fn unknown_ids_fail_with_not_found_while_the_rest_are_terminated() {
    let d = DaemonGuard::start();
    let (a, _) = d.spawn(&Fixture::polite());
    let (b, _) = d.spawn(&Fixture::polite());
    let mut client = d.client();

    let response = client.request_json(&json!({
        "op": "bulk_terminate",
        "ids": [a.id.as_str(), "ghost-1", b.id.as_str(), "ghost-2"],
    }));

    let raw = response.result.clone().expect("a terminate result");
    let result: browserd_proto::TerminateResult = response.into_result().unwrap();
    let mut terminated = result.terminated.clone();
    terminated.sort();
    let mut expected = vec![a.id.to_string(), b.id.to_string()];
    expected.sort();
    assert_eq!(terminated, expected, "{result:?}");
    assert_eq!(result.failed.len(), 2, "{result:?}");
    for ghost in ["ghost-1", "ghost-2"] {
        assert_eq!(failure_for(&result, ghost).code, ErrorCode::NotFound);
    }
    // Every failure carries all three fields on the wire.
    for failure in raw["failed"].as_array().expect("failed is an array") {
        for field in ["id", "code", "message"] {
            assert!(
                failure.get(field).is_some(),
                "`{field}` missing in {failure}"
            );
        }
    }
    d.assert_all_sessions_gone();
}

#[test]
fn bulk_terminate_accepts_the_chaser_body_with_nulls() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::polite());
    let mut client = d.client();

    let response = client.request_json(&json!({
        "op": "bulk_terminate",
        "all": true, "force": null, "ids": null, "session_type": null, "workspaces": null,
    }));

    let result: browserd_proto::TerminateResult = response.into_result().expect("accepted");
    assert_terminated_exactly(&result, &[&session.id]);
    d.assert_all_sessions_gone();
}
