//! Validated identifiers. Each newtype is checked once, where it enters (deserialization or
//! argument parsing), so code past the edge never re-checks a string.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} `{value}` has a character outside [A-Za-z0-9_-]")]
    BadCharacter { what: &'static str, value: String },
    #[error("{what} must not contain control characters")]
    ControlCharacter { what: &'static str },
    #[error("{what} `all` is reserved: it selects every session")]
    Reserved { what: &'static str },
}

fn check_token(value: &str, what: &'static str, max: usize) -> Result<(), IdError> {
    let len = value.chars().count();
    if len == 0 {
        return Err(IdError::Empty { what });
    }
    if len > max {
        return Err(IdError::TooLong { what, len, max });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdError::BadCharacter {
            what,
            value: value.escape_debug().to_string(),
        });
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&value)?;
                Ok($name(value))
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A daemon-generated session id, unique and never reused (it embeds a per-daemon nonce
    /// and a sequence number).
    SessionId,
    |v| check_token(v, "session id", 64)
);

string_newtype!(
    /// A client-chosen name for a session: 1–32 characters of `[A-Za-z0-9_-]`, not `all`,
    /// unique among live sessions.
    TrackingId,
    |v| {
        check_token(v, "tracking id", 32)?;
        if v == "all" {
            return Err(IdError::Reserved { what: "tracking id" });
        }
        Ok(())
    }
);

string_newtype!(
    /// A group of sessions that can be terminated together: 1–64 characters, no control
    /// characters.
    Workspace,
    |v| {
        let len = v.chars().count();
        if len == 0 {
            return Err(IdError::Empty { what: "workspace" });
        }
        if len > 64 {
            return Err(IdError::TooLong {
                what: "workspace",
                len,
                max: 64,
            });
        }
        if v.chars().any(char::is_control) {
            return Err(IdError::ControlCharacter { what: "workspace" });
        }
        Ok(())
    }
);

string_newtype!(
    /// What a client names a session by: its session id or its tracking id.
    SessionRef,
    |v| check_token(v, "session id or tracking id", 64)
);

string_newtype!(
    /// A daemon-generated lease id.
    LeaseId,
    |v| check_token(v, "lease id", 64)
);

impl SessionId {
    /// Builds the id of the `seq`-th session of the daemon instance identified by `nonce`.
    pub fn generate(nonce: u32, seq: u64) -> SessionId {
        SessionId(format!("{nonce:08x}-{seq:06x}"))
    }
}

impl LeaseId {
    /// Builds the id of the `seq`-th lease of the daemon instance identified by `nonce`.
    pub fn generate(nonce: u32, seq: u64) -> LeaseId {
        LeaseId(format!("lease-{nonce:08x}-{seq:x}"))
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace("default".to_owned())
    }
}

/// The target of `kill`: one session (by id or tracking id) or `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    All,
    Session(SessionRef),
}

impl TryFrom<String> for Target {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        if value == "all" {
            Ok(Target::All)
        } else {
            SessionRef::try_from(value).map(Target::Session)
        }
    }
}

impl FromStr for Target {
    type Err = IdError;
    fn from_str(value: &str) -> Result<Self, IdError> {
        Self::try_from(value.to_owned())
    }
}

impl From<Target> for String {
    fn from(value: Target) -> String {
        match value {
            Target::All => "all".to_owned(),
            Target::Session(r) => r.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_ids_follow_the_contract() {
        assert!("job-42_A".parse::<TrackingId>().is_ok());
        assert!("a".repeat(32).parse::<TrackingId>().is_ok());
        assert!(matches!(
            "a".repeat(33).parse::<TrackingId>(),
            Err(IdError::TooLong { len: 33, .. })
        ));
        assert!(matches!(
            "".parse::<TrackingId>(),
            Err(IdError::Empty { .. })
        ));
        assert!(matches!(
            "all".parse::<TrackingId>(),
            Err(IdError::Reserved { .. })
        ));
        for bad in ["a b", "a/b", "é", "a\0", "../x", "a.b"] {
            assert!(
                matches!(bad.parse::<TrackingId>(), Err(IdError::BadCharacter { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn workspaces_allow_any_printable_text_up_to_64_characters() {
        assert!("team a/β".parse::<Workspace>().is_ok());
        assert!("é".repeat(64).parse::<Workspace>().is_ok());
        assert!("é".repeat(65).parse::<Workspace>().is_err());
        assert!("".parse::<Workspace>().is_err());
        assert!("a\nb".parse::<Workspace>().is_err());
        assert_eq!(Workspace::default().as_str(), "default");
    }

    #[test]
    fn targets_parse_all_or_a_reference() {
        assert_eq!("all".parse::<Target>().unwrap(), Target::All);
        assert!(matches!(
            "abc".parse::<Target>().unwrap(),
            Target::Session(_)
        ));
        assert!("a;rm".parse::<Target>().is_err());
        let json = serde_json::to_string(&Target::All).unwrap();
        assert_eq!(json, "\"all\"");
    }

    #[test]
    fn generated_ids_are_valid_references() {
        let id = SessionId::generate(0xdead_beef, 42);
        assert_eq!(id.as_str(), "deadbeef-00002a");
        assert!(id.as_str().parse::<SessionRef>().is_ok());
        let lease = LeaseId::generate(1, 2);
        assert!(lease.as_str().parse::<LeaseId>().is_ok());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<TrackingId>("\"ok\"").is_ok());
        let err = serde_json::from_str::<TrackingId>("\"all\"").unwrap_err();
        assert!(err.to_string().contains("reserved"));
    }
}
