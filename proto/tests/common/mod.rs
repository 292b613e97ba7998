//! A fast, seeded generator of hostile input for the property tests: random bytes, JSON-ish
//! token soup, and JSON requests that look plausible field by field. Proptest's strategies
//! cost microseconds per value in a debug build; this draws from its seeded `TestRng`
//! directly, so one proptest case can check thousands of inputs and still be replayed from
//! the seed it prints.

#![allow(dead_code)] // Each test file uses its own part of it.

use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Map, Number, Value};

/// The fields each operation takes, as the SPEC lists them.
pub const FIELDS: &[(&str, &[&str])] = &[
    (
        "launch",
        &[
            "session_type",
            "workspace",
            "tracking_id",
            "command",
            "args",
            "env",
            "cwd",
            "ttl_ms",
            "memory_max",
            "pids_max",
        ],
    ),
    (
        "sessions",
        &["workspace", "session_type", "state", "tracking_id"],
    ),
    ("kill", &["target", "force", "grace_ms"]),
    (
        "bulk_terminate",
        &[
            "all",
            "force",
            "ids",
            "session_type",
            "workspaces",
            "grace_ms",
        ],
    ),
    ("lease", &["id", "ttl_ms"]),
    ("release", &["lease_id"]),
    ("status", &[]),
    ("reload", &[]),
    ("metrics", &[]),
    ("watch", &["workspace", "session_type"]),
];

/// Field names of no operation, and near misses of real ones.
const BOGUS_FIELDS: &[&str] = &[
    "bogus",
    "sessionType",
    "ttl",
    "TTL_MS",
    "op ",
    "",
    "\u{0}",
    "req-id",
    "ids\u{200b}",
    "комманда",
];

/// Strings that have broken parsers before: empty, reserved, control characters, NUL,
/// lone escapes, right-to-left marks, astral characters, very long ones are added apart.
const NASTY: &[&str] = &[
    "",
    "all",
    "ALL",
    " ",
    "a b",
    "a\u{0}b",
    "\u{0}",
    "\n",
    "\r\n",
    "\t",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "\u{202e}evil",
    "\u{feff}",
    "😀",
    "𝔘𝔫𝔦",
    "é",
    "../../etc/passwd",
    "/",
    "/tmp",
    "relative/dir",
    "-",
    "--",
    "--help",
    "=",
    "A=B",
    "BROWSERD_SESSION",
    "null",
    "true",
    "0",
    "-1",
    "18446744073709551616",
    "1e400",
    "\\",
    "\"",
    "{}",
    "[]",
    "job-42",
    "abc",
    "deadbeef-000001",
    "lease-00000001-1",
    "browser",
    "sandbox",
    "running",
    "exited",
];

/// Integers at and around every boundary the protocol's `u64` fields have.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "-0",
    "0.0",
    "0.5",
    "1e3",
    "1E3",
    "1000",
    "60000",
    "3155760000000",
    "3155760000001",
    "300000000000000",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "1e19",
    "1e308",
    "1e309",
    "1e400",
    "-1e400",
    "4.9e-324",
    "2.2250738585072014e-308",
    "0.1",
    "123456789012345678901234567890",
    "00",
    "01",
    "+1",
    ".5",
    "5.",
    "0x10",
    "NaN",
    "Infinity",
];

/// Keys a request may repeat, last value winning.
const DUPLICATE_KEYS: &[&[u8]] = &[
    b",\"op\":\"status\"",
    b",\"req_id\":1",
    b",\"op\":\"launch\"",
    b",\"ttl_ms\":18446744073709551615",
];

/// Pieces of JSON and of requests, for token soup.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\"op\"",
    "\"req_id\"",
    "\"launch\"",
    "\"status\"",
    "\"kill\"",
    "\"target\"",
    "\"all\"",
    "\"ttl_ms\"",
    "\"command\"",
    "\"env\"",
    "null",
    "true",
    "false",
    "0",
    "-",
    "1e999",
    "18446744073709551616",
    " ",
    "\t",
    "\r",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\udfff",
    "\\uD83D\\uDE00",
    "\\n",
    "\u{0}",
    "\u{ff}",
    "é",
    "😀",
    "\u{fffd}",
];

/// A seeded source of generated input.
pub struct Gen {
    rng: TestRng,
}

impl Gen {
    /// A generator that produces the same input for the same seed, whatever machine.
    pub fn new(seed: u64) -> Gen {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..].copy_from_slice(&(!seed).to_le_bytes());
        Gen {
            rng: TestRng::from_seed(RngAlgorithm::XorShift, &bytes),
        }
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub fn u64(&mut self) -> u64 {
        self.rng.random()
    }

    /// One of `items`, chosen uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A length, usually short, sometimes up to `max`.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(10) {
            0..=6 => self.below(max.min(8) + 1),
            7 | 8 => self.below(max.min(64) + 1),
            _ => self.below(max + 1),
        }
    }

    /// Uniformly random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.rng.random::<u8>()).collect()
    }

    /// Bytes glued together from JSON tokens, request words and stray bytes: input that gets
    /// past the first byte of a parser more often than random bytes do.
    pub fn token_soup(&mut self, pieces: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..pieces {
            match self.below(8) {
                0 => out.push(self.rng.random::<u8>()),
                1 => out.extend_from_slice(self.pick(NUMBERS).as_bytes()),
                _ => out.extend_from_slice(self.pick(TOKENS).as_bytes()),
            }
        }
        out
    }

    /// A string: a nasty one, a random token, random Unicode, or a long run.
    pub fn string(&mut self) -> String {
        match self.below(12) {
            0..=4 => self.pick(NASTY).to_string(),
            5..=7 => self.token(),
            8 | 9 => {
                let len = self.len(40);
                (0..len).map(|_| self.char()).collect()
            }
            10 => {
                // Long runs: past the 64-character id limits often, towards the frame cap
                // rarely (the cap itself is the frame tests' business).
                let c = self.char();
                let len = match self.chance(0.005) {
                    true => self.below(20_000),
                    false => self.below(300),
                };
                std::iter::repeat_n(c, len).collect()
            }
            _ => {
                let base = self.token();
                format!("{base}{}", self.pick(NASTY))
            }
        }
    }

    /// A character: ASCII mostly, then any scalar value.
    pub fn char(&mut self) -> char {
        match self.below(4) {
            0 | 1 => (b' ' + self.below(95) as u8) as char,
            2 => char::from_u32(self.below(0x300) as u32).unwrap_or('?'),
            _ => char::from_u32(self.rng.random_range(0..0x11_0000u32)).unwrap_or('\u{fffd}'),
        }
    }

    /// `[A-Za-z0-9_-]` of a length around the 32 and 64 character limits of ids.
    pub fn token(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcXYZ019_-";
        let len = match self.below(6) {
            0 => 0,
            1 => 31 + self.below(3),
            2 => 63 + self.below(3),
            _ => 1 + self.below(12),
        };
        (0..len).map(|_| self.pick(ALPHABET) as char).collect()
    }

    /// A JSON number: a boundary value, a random integer of either sign, or a float.
    pub fn number(&mut self) -> Value {
        match self.below(5) {
            0 => {
                let text: &str = self.pick(NUMBERS);
                serde_json::from_str(text).unwrap_or(Value::Null)
            }
            1 => json!(self.u64()),
            2 => json!(self.u64() as i64),
            3 => json!(self.below(100_000)),
            _ => Number::from_f64(f64::from_bits(self.u64()))
                .map(Value::Number)
                .unwrap_or(json!(0.25)),
        }
    }

    /// Any JSON value, nested at most `depth` deep.
    pub fn value(&mut self, depth: usize) -> Value {
        let kinds = if depth == 0 { 4 } else { 6 };
        match self.below(kinds) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(0.5)),
            2 => self.number(),
            3 => Value::String(self.string()),
            4 => {
                let len = self.len(6);
                Value::Array((0..len).map(|_| self.value(depth - 1)).collect())
            }
            _ => {
                let len = self.len(6);
                let map: Map<String, Value> = (0..len)
                    .map(|_| (self.string(), self.value(depth - 1)))
                    .collect();
                Value::Object(map)
            }
        }
    }

    /// A value shaped like what the named field takes, often valid, sometimes just off.
    pub fn field_value(&mut self, field: &str) -> Value {
        if self.chance(0.2) {
            return self.value(2);
        }
        match field {
            "session_type" => json!(self.pick(&["browser", "sandbox", "Browser", "vm", ""])),
            "state" => json!(self.pick(&["starting", "running", "terminating", "exited", "dead"])),
            "workspace" => json!(self.workspace()),
            "tracking_id" | "target" | "id" | "lease_id" => json!(self.token_or_nasty()),
            "command" | "args" => {
                let len = self.len(5);
                Value::Array((0..len).map(|_| json!(self.string())).collect())
            }
            "ids" => {
                let len = self.len(5);
                Value::Array((0..len).map(|_| json!(self.token_or_nasty())).collect())
            }
            "workspaces" => {
                let len = self.len(5);
                Value::Array((0..len).map(|_| json!(self.workspace())).collect())
            }
            "env" => {
                let len = self.len(5);
                let map: Map<String, Value> = (0..len)
                    .map(|_| (self.env_name(), json!(self.string())))
                    .collect();
                Value::Object(map)
            }
            "cwd" => match self.below(3) {
                0 => json!(format!("/{}", self.string())),
                _ => json!(self.string()),
            },
            "ttl_ms" | "grace_ms" => self.number(),
            "force" | "all" => match self.below(4) {
                0 => Value::Null,
                1 => json!("yes"),
                _ => Value::Bool(self.chance(0.5)),
            },
            _ => self.value(2),
        }
    }

    fn token_or_nasty(&mut self) -> String {
        if self.chance(0.7) {
            self.token()
        } else {
            self.string()
        }
    }

    fn workspace(&mut self) -> String {
        match self.below(4) {
            0 => "é".repeat(63 + self.below(3)),
            1 => self.token(),
            _ => self.string(),
        }
    }

    fn env_name(&mut self) -> String {
        match self.below(4) {
            0 => self
                .pick(&["BROWSERD_SESSION", "A=B", "", "\u{0}", "PATH"])
                .to_string(),
            _ => format!("FUZZ_{}", self.token()),
        }
    }

    /// A request object: an op (usually a real one), maybe a `req_id`, and fields drawn
    /// mostly from what that op takes.
    pub fn request_object(&mut self) -> Map<String, Value> {
        let mut object = Map::new();
        let (op, fields) = self.pick(FIELDS);
        match self.below(20) {
            0 => {}
            1 => {
                object.insert("op".into(), self.value(1));
            }
            2 | 3 => {
                object.insert("op".into(), json!(self.string()));
            }
            _ => {
                object.insert("op".into(), json!(op));
            }
        }
        if self.chance(0.5) {
            object.insert("req_id".into(), self.value(2));
        }
        for field in fields {
            if self.chance(0.5) {
                object.insert(field.to_string(), self.field_value(field));
            }
        }
        if self.chance(0.1) {
            let (_, other) = self.pick(FIELDS);
            if let Some(field) = other.first() {
                object.insert(field.to_string(), self.field_value(field));
            }
        }
        if self.chance(0.05) {
            let bogus = self.pick(BOGUS_FIELDS).to_string();
            let value = self.value(1);
            object.insert(bogus, value);
        }
        object
    }

    /// A request line: a [`Gen::request_object`] serialized, sometimes damaged on the way
    /// (cut short, a byte changed, a byte inserted, a key repeated), sometimes nested
    /// absurdly deep. The object comes back too when the line is exactly its encoding.
    pub fn request(&mut self) -> (Vec<u8>, Option<Map<String, Value>>) {
        let object = Value::Object(self.request_object());
        let mut line = serde_json::to_vec(&object).expect("values serialize");
        match self.below(20) {
            0 => line.truncate(self.below(line.len() + 1)),
            1 => {
                let at = self.below(line.len());
                line[at] = self.rng.random();
            }
            2 => {
                let at = self.below(line.len() + 1);
                let byte = self.pick(b"\0\n\r\"\\{}[],:\xff\xc3 ");
                line.insert(at, byte);
            }
            3 => {
                // Duplicate keys: serde_json keeps the last one.
                let at = line.len() - 1;
                let dup: &[u8] = self.pick(DUPLICATE_KEYS);
                line.splice(at..at, dup.iter().copied());
            }
            4 => line = deeply_nested(self.below(2) == 0, 100 + self.below(3000)),
            _ => {
                let Value::Object(object) = object else {
                    unreachable!("built as an object")
                };
                return (line, Some(object));
            }
        }
        (line, None)
    }

    /// Just the line of [`Gen::request`].
    pub fn request_line(&mut self) -> Vec<u8> {
        self.request().0
    }
}

/// `{"op":"status","req_id":[[[…]]]}` (or unclosed), deeper than any parser should recurse.
pub fn deeply_nested(closed: bool, depth: usize) -> Vec<u8> {
    let mut line = b"{\"op\":\"status\",\"req_id\":".to_vec();
    line.extend(std::iter::repeat_n(b'[', depth));
    if closed {
        line.extend(std::iter::repeat_n(b']', depth));
        line.push(b'}');
    }
    line
}
