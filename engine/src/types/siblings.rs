//! A register that keeps concurrent writes (a multi-value register with dotted version
//! vectors): each value carries the event that wrote it, and the register's clock says
//! what it has seen. A write with a *context* (the clock a read returned) replaces
//! exactly the values that read saw; values written meanwhile, which it did not see,
//! stay beside it as siblings. A write without a context replaces nothing.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Actor, Clock, Dot, SIBLINGS_MAX, TypeError, surviving};

/// What a read of a register saw: pass it back with the write that resolves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context(pub Clock);

/// Prefix of a context token, with the format's version.
const TOKEN_PREFIX: &str = "c1.";

impl Context {
    /// The copy-paste safe form a client is given (no spaces, no shell specials).
    pub fn token(&self) -> String {
        let bytes = postcard::to_allocvec(&self.0).expect("a clock always encodes");
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Reads a token made by [`Context::token`].
    pub fn from_token(token: &str) -> Result<Context, String> {
        let body = token.strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
            format!("a context token starts with {TOKEN_PREFIX:?}; got {token:?}")
        })?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| format!("the context token is not valid: {e}"))?;
        postcard::from_bytes(&bytes)
            .map(Context)
            .map_err(|e| format!("the context token is not valid: {e}"))
    }
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Siblings {
    clock: Clock,
    /// The values kept, each with the event that wrote it (a delete keeps none, only
    /// the clock that saw what it replaced).
    values: Vec<(Dot, Vec<u8>)>,
}

impl Siblings {
    /// The values, in the order of their events.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.values.iter().map(|(_, v)| v.as_slice())
    }

    /// How many values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no value is held (never written, or deleted).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// What a read sees: pass it back to resolve the siblings.
    pub fn context(&self) -> Context {
        Context(self.clock.clone())
    }

    /// `actor` writes `value` (`None`: deletes) at its event `at`, having seen
    /// `context`: the values the context covers go, the new one joins the others.
    pub fn put(
        &mut self,
        actor: Actor,
        value: Option<Vec<u8>>,
        context: &Context,
        at: u64,
    ) -> Result<(), TypeError> {
        let kept = self
            .values
            .iter()
            .filter(|(dot, _)| !context.0.covers(*dot))
            .count();
        let siblings = kept + usize::from(value.is_some());
        if siblings > SIBLINGS_MAX {
            return Err(TypeError::TooManySiblings {
                siblings,
                limit: SIBLINGS_MAX,
            });
        }
        self.values.retain(|(dot, _)| !context.0.covers(*dot));
        self.clock.merge(&context.0);
        let dot = self.clock.next(actor, at);
        if let Some(value) = value {
            // Kept in the order of their events: equal states are equal bytes.
            self.values.push((dot, value));
            self.values.sort_by_key(|(d, _)| *d);
        }
        Ok(())
    }

    /// The values both hold, and what only one holds that the other has not seen
    /// replaced.
    pub fn merge(&mut self, other: &Siblings) {
        let mine: Vec<Dot> = self.values.iter().map(|(d, _)| *d).collect();
        let theirs: Vec<Dot> = other.values.iter().map(|(d, _)| *d).collect();
        let keep_mine = surviving(&mine, &theirs, &other.clock);
        let keep_theirs = surviving(&theirs, &mine, &self.clock);
        let mut values: Vec<(Dot, Vec<u8>)> = self
            .values
            .iter()
            .filter(|(d, _)| keep_mine.contains(d))
            .cloned()
            .collect();
        for (dot, value) in &other.values {
            if keep_theirs.contains(dot) && !values.iter().any(|(d, _)| d == dot) {
                values.push((*dot, value.clone()));
            }
        }
        values.sort_by_key(|(d, _)| *d);
        self.values = values;
        self.clock.merge(&other.clock);
    }
}
