//! The vocabulary every layer shares: monotonic time as the runtime counts it, how
//! many replicas an operation waits for, and who a certificate says its holder is.
//! Below everything, so the mechanisms, the protocol and the certificates name the same
//! types without knowing one another.

use serde::{Deserialize, Serialize};

/// Monotonic time in milliseconds, as the runtime counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// As a duration since the runtime's start.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

/// Who a certificate says its holder is. Each request is checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A cluster member: may send internode messages and data operations.
    Node,
    /// An application: data operations and status only.
    Client,
    /// An operator: everything a client may do, and administrative commands.
    Admin,
}

impl Role {
    /// The name used in certificates (the subject's OU) and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// Parses the certificate form.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "node" => Some(Role::Node),
            "client" => Some(Role::Client),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many replicas must answer before an operation succeeds. Chosen per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica: fastest, most available.
    One,
    /// A majority of replicas.
    Quorum,
    /// Every replica.
    All,
}

impl Consistency {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }
}
