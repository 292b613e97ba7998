//! `decode_request` against generated input: arbitrary bytes, JSON token soup, and requests
//! that look right field by field. Whatever comes in, decoding never panics; a rejection
//! carries the SPEC code the input deserves and the `req_id` it came with; an accepted
//! request takes only its operation's fields, and encodes and decodes back to itself.

mod common;

use browserd_proto::request::{Rejected, OPS};
use browserd_proto::{decode_request, encode_request, Envelope, ErrorCode, Request, MAX_FRAME};
use common::{deeply_nested, Gen, FIELDS};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Inputs per proptest case: the generator is fast, proptest's per-case cost is not.
const BATCH: usize = 1000;

/// What decoding `line` must give, judged independently of the decoder: the error code of
/// a rejection (`None` when the request may be accepted), and the `req_id` to answer under.
fn expected(line: &[u8]) -> (Option<ErrorCode>, Option<Value>) {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(object)) => expected_of(&object),
        _ => (Some(ErrorCode::InvalidJson), None),
    }
}

/// [`expected`] for a line known to encode `object`.
fn expected_of(object: &Map<String, Value>) -> (Option<ErrorCode>, Option<Value>) {
    let req_id = object.get("req_id").cloned();
    let code = match object.get("op") {
        Some(Value::String(op)) if OPS.contains(&op.as_str()) => None,
        Some(Value::String(_)) => Some(ErrorCode::UnknownOp),
        _ => Some(ErrorCode::InvalidRequest),
    };
    (code, req_id)
}

/// Decodes `line` and checks every property; panics with the input on a violation.
fn check(line: &[u8]) {
    check_known(line, None)
}

/// [`check`], for a line known to be the encoding of `object` if that is given.
fn check_known(line: &[u8], object: Option<&Map<String, Value>>) {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(400)]).into_owned();
    let (code, req_id) = match object {
        Some(object) => expected_of(object),
        None => expected(line),
    };
    match decode_request(line) {
        Err(Rejected {
            req_id: got_id,
            error,
        }) => {
            assert!(
                matches!(
                    error.code,
                    ErrorCode::InvalidJson | ErrorCode::UnknownOp | ErrorCode::InvalidRequest
                ),
                "a decoding error outside the SPEC's set: {error} for {}",
                shown()
            );
            let code = code.unwrap_or(ErrorCode::InvalidRequest);
            assert_eq!(error.code, code, "{error} for {}", shown());
            assert_eq!(got_id, req_id, "req_id of {}", shown());
            assert!(!error.message.is_empty(), "{}", shown());
        }
        Ok(envelope) => {
            assert_eq!(code, None, "accepted {}", shown());
            assert_eq!(envelope.req_id, req_id, "req_id of {}", shown());
            assert_only_known_fields(line, &envelope.request);
            assert_round_trips(&envelope, &shown());
        }
    }
}

/// An accepted request named no field its operation does not take.
fn assert_only_known_fields(line: &[u8], request: &Request) {
    let object: Map<String, Value> = serde_json::from_slice(line).expect("it was accepted");
    let op = object["op"].as_str().expect("a string op");
    let (_, known) = FIELDS.iter().find(|(name, _)| *name == op).expect("an op");
    for key in object.keys().filter(|k| *k != "op" && *k != "req_id") {
        assert!(
            known.contains(&key.as_str()),
            "`{op}` accepted the unknown field `{key}` as {request:?}"
        );
    }
}

/// Encoding an accepted request and decoding it again gives the same request and id.
fn assert_round_trips(envelope: &Envelope, shown: &str) {
    let line = encode_request(envelope.req_id.as_ref(), &envelope.request);
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "{line}"
    );
    let again = decode_request(line.trim_end_matches('\n').as_bytes())
        .unwrap_or_else(|e| panic!("re-encoded {shown} as {line} which is refused: {e:?}"));
    assert_eq!(&again, envelope, "{shown} re-encoded as {line}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 500,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    })]

    /// 500 000 lines of uniformly random bytes.
    #[test]
    fn random_bytes_are_rejected_as_invalid_json(seed in any::<u64>()) {
        let mut gen = Gen::new(seed);
        for _ in 0..BATCH {
            let len = gen.len(200);
            check(&gen.bytes(len));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    })]

    /// 300 000 lines of JSON tokens glued at random.
    #[test]
    fn json_token_soup_never_panics_and_gets_a_spec_code(seed in any::<u64>()) {
        let mut gen = Gen::new(seed);
        for _ in 0..BATCH {
            let pieces = gen.len(40);
            check(&gen.token_soup(pieces));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    })]

    /// 40 000 plausible requests of every op, some damaged.
    #[test]
    fn plausible_requests_decode_consistently_and_round_trip(seed in any::<u64>()) {
        let mut gen = Gen::new(seed);
        for _ in 0..BATCH {
            let (line, object) = gen.request();
            check_known(&line, object.as_ref());
        }
    }
}

/// JSON values as proptest strategies, shrinkable, for a failure to come out small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request of a real op with some of its fields (or another op's), each any JSON value.
fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
    let all_fields: Vec<&str> = FIELDS.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    (
        prop::sample::select(OPS),
        prop::option::of(json_value()),
        prop::collection::btree_map(prop::sample::select(all_fields), json_value(), 0..4),
    )
        .prop_map(|(op, req_id, fields)| {
            let mut object: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            object.insert("op".into(), Value::from(op));
            if let Some(id) = req_id {
                object.insert("req_id".into(), id);
            }
            serde_json::to_vec(&Value::Object(object)).expect("values serialize")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn requests_with_any_field_values_decode_consistently(line in request_strategy()) {
        check(&line);
    }

    #[test]
    fn arbitrary_byte_strings_never_panic(line in prop::collection::vec(any::<u8>(), 0..64)) {
        check(&line);
    }
}

#[test]
fn absurd_nesting_is_invalid_json_not_a_stack_overflow() {
    for depth in [127, 128, 129, 1_000, 100_000, 1_000_000] {
        for closed in [true, false] {
            let line = deeply_nested(closed, depth);
            check(&line);
            let rejected = decode_request(&line).unwrap_err();
            assert_eq!(rejected.error.code, ErrorCode::InvalidJson, "{depth}");
        }
    }
}

#[test]
fn numbers_beyond_u64_and_f64_are_refused_not_wrapped() {
    for (ttl, code) in [
        ("18446744073709551616", ErrorCode::InvalidRequest),
        ("-1", ErrorCode::InvalidRequest),
        ("1.5", ErrorCode::InvalidRequest),
        ("1e400", ErrorCode::InvalidJson),
        ("1e19", ErrorCode::InvalidRequest),
    ] {
        let line = format!(r#"{{"op":"launch","command":["x"],"ttl_ms":{ttl}}}"#);
        let rejected = decode_request(line.as_bytes()).unwrap_err();
        assert_eq!(rejected.error.code, code, "{line}: {}", rejected.error);
    }
}

#[test]
fn long_strings_and_nul_bytes_in_every_field_never_panic() {
    let long = "x".repeat(64 * 1024);
    for (op, fields) in FIELDS {
        for field in *fields {
            for value in [
                Value::from(long.as_str()),
                Value::from("a\u{0}b"),
                Value::from(vec![long.as_str(); 3]),
            ] {
                let mut object = Map::new();
                object.insert("op".into(), Value::from(*op));
                object.insert(field.to_string(), value);
                check(&serde_json::to_vec(&Value::Object(object)).unwrap());
            }
        }
    }
}

#[test]
fn a_request_just_under_the_frame_cap_decodes() {
    let padding = "p".repeat(MAX_FRAME - 100);
    let line = format!(r#"{{"op":"status","req_id":"{padding}"}}"#);
    assert!(line.len() < MAX_FRAME);
    check(line.as_bytes());
    let line = format!(r#"{{"op":"kill","target":"{padding}"}}"#);
    check(line.as_bytes());
}

#[test]
fn a_float_req_id_is_echoed_exactly() {
    // Found by the properties above: without serde_json's `float_roundtrip`, this parses to
    // a neighbouring double and goes back out as `-3.042619681646001e-263`.
    let line = br#"{"op":"status","req_id":-3.0426196816460012e-263}"#;
    let envelope = decode_request(line).expect("a valid status request");
    let echoed = encode_request(envelope.req_id.as_ref(), &envelope.request);
    assert!(echoed.contains("-3.0426196816460012e-263"), "{echoed}");
}
