//! The wire protocol under abuse: every bad line gets a precise error on its own connection,
//! the connection stays usable where the framing allows, and other clients never notice.

use browserd_proto::duration::MAX_DURATION_MS;
use browserd_proto::{ErrorCode, Request, Response, StatusResult, MAX_FRAME, PROTOCOL};
use browserd_tests::{Client, DaemonGuard, Fixture};
use serde_json::{json, Value};

/// Asserts that `client` is served: a `status` on it succeeds.
#[track_caller]
fn assert_served(client: &mut Client) {
    let status: StatusResult = client
        .request(&Request::Status)
        .into_result()
        .expect("status succeeds");
    assert_eq!(status.protocol, PROTOCOL);
}

#[track_caller]
fn error_code(response: Response) -> ErrorCode {
    assert!(!response.ok, "expected an error, got {response:?}");
    response.error.expect("a failed response has an error").code
}

#[test]
fn bad_lines_get_precise_errors_while_other_clients_are_served() {
    let d = DaemonGuard::start();
    let mut bad = d.client();
    let mut good = d.client();
    let cases: &[(&[u8], ErrorCode, &str)] = &[
        (b"{\n", ErrorCode::InvalidJson, "truncated JSON"),
        (b"hello\n", ErrorCode::InvalidJson, "not JSON"),
        (b"\xff\xfe{}\n", ErrorCode::InvalidJson, "invalid UTF-8"),
        (
            b"{\"op\":\"\xc3\x28\"}\n",
            ErrorCode::InvalidJson,
            "invalid UTF-8 in a string",
        ),
        (b"[1,2]\n", ErrorCode::InvalidJson, "not an object"),
        (b"{\"op\":\"fly\"}\n", ErrorCode::UnknownOp, "unknown op"),
        (b"{}\n", ErrorCode::InvalidRequest, "missing op"),
        (b"{\"op\":5}\n", ErrorCode::InvalidRequest, "non-string op"),
        (
            b"{\"op\":\"status\",\"bogus\":1}\n",
            ErrorCode::InvalidRequest,
            "unknown field",
        ),
        (
            b"{\"op\":\"kill\",\"target\":\"x\",\"sudo\":true}\n",
            ErrorCode::InvalidRequest,
            "unknown field",
        ),
        (
            b"{\"op\":\"kill\",\"target\":\"a b\"}\n",
            ErrorCode::InvalidRequest,
            "bad target",
        ),
        (
            b"{\"op\":\"launch\",\"session_type\":\"vm\",\"command\":[\"x\"]}\n",
            ErrorCode::InvalidRequest,
            "bad session type",
        ),
    ];

    for (line, code, what) in cases {
        bad.send_raw(line);
        let response = bad.read_response();
        let error = response
            .error
            .clone()
            .unwrap_or_else(|| panic!("{what}: expected an error, got {response:?}"));
        assert_eq!(
            error.code,
            *code,
            "{what} ({}): {error}",
            String::from_utf8_lossy(line)
        );
        assert!(
            !error.message.is_empty(),
            "{what}: errors explain themselves"
        );
        assert_served(&mut good);
    }
    // The offending connection itself is still usable: these lines were well framed.
    assert_served(&mut bad);
    let unknown_field = bad.request_json(&json!({"op": "kill", "target": "x", "sudo": true}));
    assert!(
        unknown_field.error.unwrap().message.contains("sudo"),
        "the error names the unknown field"
    );
}

#[test]
fn an_oversized_line_is_refused_and_the_connection_stays_usable() {
    let d = DaemonGuard::start();
    let mut big = d.client();
    let mut other = d.client();
    let line = vec![b'x'; MAX_FRAME + 1];
    let (first, rest) = line.split_at(MAX_FRAME / 2);

    // Half a huge line in flight on one connection does not stall another.
    big.send_raw(first);
    assert_served(&mut other);
    big.send_raw(rest);
    big.send_raw(b"\n{\"op\":\"status\",\"req_id\":\"after\"}\n");

    assert_eq!(error_code(big.read_response()), ErrorCode::FrameTooLarge);
    let after = big.read_response();
    assert!(
        after.ok,
        "the request after the oversized line is served: {after:?}"
    );
    assert_eq!(after.req_id, Some(json!("after")));
    assert_served(&mut other);
}

#[test]
fn a_line_of_exactly_the_maximum_size_is_accepted() {
    let d = DaemonGuard::start();
    let mut client = d.client();
    let skeleton = json!({"op": "status", "req_id": ""}).to_string();
    let padding = "p".repeat(MAX_FRAME - skeleton.len());
    let line = json!({"op": "status", "req_id": padding}).to_string();
    assert_eq!(line.len(), MAX_FRAME);

    client.send_raw(format!("{line}\n").as_bytes());
    let response = client.read_response();

    assert!(response.ok, "{:?}", response.error);
    assert_eq!(response.req_id, Some(Value::String(padding)));
}

#[test]
fn req_id_is_echoed_verbatim_on_success_and_on_error() {
    let d = DaemonGuard::start();
    let mut client = d.client();

    for req_id in [
        json!(7),
        json!("r-1"),
        json!({"trace": [1, 2.5, null, "x"]}),
        json!([true, false]),
    ] {
        let ok = client.request_with_id(&req_id, &Request::Status);
        assert!(ok.ok);
        assert_eq!(ok.req_id.as_ref(), Some(&req_id));

        let rejected = client.request_json(&json!({"op": "fly", "req_id": req_id}));
        assert_eq!(rejected.req_id.as_ref(), Some(&req_id));
        assert_eq!(error_code(rejected), ErrorCode::UnknownOp);

        let invalid = client.request_json(&json!({"op": "kill", "req_id": req_id}));
        assert_eq!(invalid.req_id.as_ref(), Some(&req_id));
        assert_eq!(error_code(invalid), ErrorCode::InvalidRequest);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let d = DaemonGuard::start();
    let (session, _) = d.spawn(&Fixture::stubborn_sleeper());
    let mut client = d.client();
    let kill = json!({
        "op": "kill", "req_id": 1, "target": session.id.as_str(), "grace_ms": 500
    });
    let batch = [
        kill,
        json!({"op": "status", "req_id": 2}),
        json!({"op": "fly", "req_id": 3}),
        json!({"op": "sessions", "req_id": 4}),
        json!({"op": "kill", "req_id": 5, "target": session.id.as_str(), "force": true, "grace_ms": 100}),
        json!({"op": "status", "req_id": 6}),
    ];
    let bytes: String = batch.iter().map(|v| format!("{v}\n")).collect();

    // One write: the slow first request (a 500 ms grace that times out) must not let the
    // quick ones overtake it.
    client.send_raw(bytes.as_bytes());
    let responses: Vec<Response> = (0..batch.len()).map(|_| client.read_response()).collect();

    let ids: Vec<Option<Value>> = responses.iter().map(|r| r.req_id.clone()).collect();
    let expected: Vec<Option<Value>> = (1..=6).map(|n| Some(json!(n))).collect();
    assert_eq!(ids, expected);
    let timeout: browserd_proto::TerminateResult = responses[0].clone().into_result().unwrap();
    assert_eq!(timeout.failed[0].code, ErrorCode::Timeout, "{timeout:?}");
    assert_eq!(error_code(responses[2].clone()), ErrorCode::UnknownOp);
    let forced: browserd_proto::TerminateResult = responses[4].clone().into_result().unwrap();
    assert_eq!(forced.terminated, vec![session.id.to_string()]);
    d.assert_all_sessions_gone();
}

#[test]
fn an_unterminated_last_line_is_answered_at_end_of_input() {
    let d = DaemonGuard::start();
    let mut client = d.client();

    // What `printf '{"op":"status"}' | nc -U` does.
    client.send_raw(br#"{"op":"status","req_id":"eof"}"#);
    client.shutdown_write();

    let response = client.read_response();
    assert!(response.ok, "{response:?}");
    assert_eq!(response.req_id, Some(json!("eof")));
}

#[test]
fn a_client_that_vanishes_mid_line_does_not_disturb_others() {
    let d = DaemonGuard::start();
    let mut other = d.client();
    {
        let mut vanishing = d.client();
        vanishing.send_raw(br#"{"op":"launch","command":["/bin/sh","-c","#);
    }
    {
        let mut unread = d.client();
        // Asks, then leaves without reading the answer.
        unread.send_raw(b"{\"op\":\"status\"}\n{\"op\":\"sessions\"}\n");
    }

    assert_served(&mut other);
    assert!(d.sessions(Default::default()).is_empty());
    assert!(d.daemon_children().is_empty());
}

#[test]
fn a_response_without_req_id_carries_none() {
    let d = DaemonGuard::start();
    let mut client = d.client();

    client.send_raw(b"{\"op\":\"status\"}\n");
    let line = client.read_line().expect("a response line");

    let value: Value = serde_json::from_slice(&line).expect("a JSON response");
    assert_eq!(value["ok"], json!(true));
    assert!(
        value.get("req_id").is_none_or(Value::is_null),
        "no req_id was sent, none should come back: {value}"
    );
    assert!(value.get("result").is_some() && value.get("error").is_none());
}

#[test]
fn a_queue_timeout_beyond_the_bound_is_an_invalid_request() {
    let d = DaemonGuard::start();
    let mut client = d.client();
    for (value, bound) in [
        (json!(MAX_DURATION_MS + 1), true),
        (json!(u64::MAX), true),
        (json!(-1), false),
        (json!("30s"), false),
    ] {
        let response = client.request_json(&json!({
            "op": "launch", "req_id": 1, "queue_timeout_ms": value
        }));
        let error = response.error.expect("refused");
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{value}: {error:?}");
        if bound {
            assert!(
                error.message.contains("queue_timeout_ms") && error.message.contains("100 years"),
                "{value}: {}",
                error.message
            );
        }
    }
    assert_served(&mut client);
}
