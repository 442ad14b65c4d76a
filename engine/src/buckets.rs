//! Buckets: namespaces of keys, each with a type (last-writer-wins, counter, set,
//! siblings), an optional TTL and a default consistency; and the catalog of them every
//! node holds.
//!
//! A bucket's keys are stored under an internal key: `default`'s as the user wrote
//! them (so a data directory from before buckets serves its keys as `default`, with no
//! rewrite), every other bucket's behind [`BUCKET_KEY_PREFIX`] and its id. The id is
//! drawn when the bucket is created, so a bucket deleted and created again under the
//! same name never sees the old one's data.
//!
//! The catalog is cluster metadata, equal on every node. It is small (at most
//! [`BUCKETS_MAX`] definitions) and changes rarely, so it is not data placed on a few
//! replicas: every node keeps all of it, gossips its digest with its status, and a node
//! that sees another digest exchanges catalogs with that member and merges. Merging is
//! a CRDT's: per name, the definition created last wins (concurrent creates of one name
//! resolve alike everywhere), and a deletion, once known, stays. A node that was down
//! learns what changed from the first member it talks to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::base::Consistency;
use crate::record::Version;

/// A bucket's numeric id, part of its keys' internal form.
pub type BucketId = u32;

/// The longest TTL a bucket or a write may have: ten years.
pub const TTL_MS_MAX: u64 = 10 * 365 * 24 * 3_600_000;

/// Checks a TTL (of a bucket or a write) against its bounds.
pub fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    if ttl_ms == 0 {
        return Err("bad TTL 0ms: a TTL is at least 1ms (leave it out for no expiry)".into());
    }
    if ttl_ms > TTL_MS_MAX {
        return Err(format!(
            "bad TTL {ttl_ms}ms: the longest is {TTL_MS_MAX}ms (ten years)"
        ));
    }
    Ok(())
}

/// The bucket every key belongs to unless it names another; last-writer-wins, no TTL.
pub const DEFAULT_BUCKET: &str = "default";
/// The default bucket's id.
pub const DEFAULT_BUCKET_ID: BucketId = 0;
/// What the internal key of a key outside `default` starts with, before the bucket id.
/// A key of `default` may not start with it.
pub const BUCKET_KEY_PREFIX: [u8; 8] = *b"\x00vbucket";
/// Bytes a bucket adds in front of a user key.
pub const BUCKET_KEY_OVERHEAD: usize = BUCKET_KEY_PREFIX.len() + 4;
const _: () = assert!(BUCKET_KEY_OVERHEAD == crate::limits::BUCKET_KEY_BYTES);
/// Most buckets a cluster defines, deleted ones included (a deletion is kept so that
/// the deleted bucket's data is refused wherever it turns up).
pub const BUCKETS_MAX: usize = 1_000;
/// Longest bucket name.
pub const BUCKET_NAME_BYTES_MAX: usize = 64;

/// What a bucket's keys hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketType {
    /// Bytes; the last write wins.
    Lww,
    /// A counter that goes up and down.
    Counter,
    /// A set where an add wins over a concurrent remove.
    Set,
    /// A register that keeps concurrent writes as siblings.
    Siblings,
    /// Bytes, every operation linearizable: each key's writes are agreed on by its
    /// replicas (single-decree Paxos per key), and compare-and-set is offered.
    Linearizable,
}

impl BucketType {
    /// The name the command line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            BucketType::Lww => "lww",
            BucketType::Counter => "counter",
            BucketType::Set => "set",
            BucketType::Siblings => "siblings",
            BucketType::Linearizable => "linearizable",
        }
    }

    /// The type of a name the command line uses.
    pub fn parse(name: &str) -> Result<BucketType, String> {
        match name {
            "lww" => Ok(BucketType::Lww),
            "counter" => Ok(BucketType::Counter),
            "set" => Ok(BucketType::Set),
            "siblings" => Ok(BucketType::Siblings),
            "linearizable" => Ok(BucketType::Linearizable),
            other => Err(format!(
                "unknown bucket type {other:?}: the types are lww, counter, set, siblings and linearizable"
            )),
        }
    }
}

/// A bucket's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: BucketId,
    /// What its keys hold.
    pub kind: BucketType,
    /// How long a write lives, if it expires.
    pub ttl_ms: Option<u64>,
    /// The consistency of operations that name none (the node's default otherwise).
    pub consistency: Option<Consistency>,
    /// The version of the create: the later of two creates of one name wins.
    pub created: Version,
    /// The version of the delete, once deleted.
    pub deleted: Option<Version>,
}

impl Bucket {
    /// The `default` bucket.
    pub fn default_bucket() -> Bucket {
        Bucket {
            name: DEFAULT_BUCKET.to_string(),
            id: DEFAULT_BUCKET_ID,
            kind: BucketType::Lww,
            ttl_ms: None,
            consistency: None,
            created: Version::default(),
            deleted: None,
        }
    }

    /// The internal key of this bucket's `key`.
    pub fn internal_key(&self, key: &[u8]) -> Vec<u8> {
        internal_key(self.id, key)
    }
}

/// The internal key of `key` in bucket `id`.
pub fn internal_key(id: BucketId, key: &[u8]) -> Vec<u8> {
    if id == DEFAULT_BUCKET_ID {
        return key.to_vec();
    }
    let mut out = Vec::with_capacity(BUCKET_KEY_OVERHEAD + key.len());
    out.extend_from_slice(&BUCKET_KEY_PREFIX);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The bucket id and user key of an internal key.
pub fn split_key(internal: &[u8]) -> (BucketId, &[u8]) {
    match internal.strip_prefix(&BUCKET_KEY_PREFIX[..]) {
        Some([a, b, c, d, rest @ ..]) if !rest.is_empty() => {
            (BucketId::from_be_bytes([*a, *b, *c, *d]), rest)
        }
        _ => (DEFAULT_BUCKET_ID, internal),
    }
}

/// Checks a key as stored (a user key with its bucket's prefix): what nodes send each
/// other. The user key inside is held to [`crate::limits::KEY_BYTES_MAX`], so a peer cannot store in
/// `default` a key no client could have written, and the whole stays within
/// [`crate::limits::STORED_KEY_BYTES_MAX`].
pub fn check_stored_key(key: &[u8]) -> Result<(), crate::limits::LimitError> {
    if key.is_empty() {
        return Err(crate::limits::LimitError::EmptyKey);
    }
    let (_, user) = split_key(key);
    crate::limits::check_key(user)
}

/// Checks a bucket name: 1 to 64 of `a-z 0-9 _ - .`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if name.is_empty() || name.len() > BUCKET_NAME_BYTES_MAX {
        return Err(format!(
            "bucket name {name:?} is {} bytes: a name is 1 to {BUCKET_NAME_BYTES_MAX} bytes",
            name.len()
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "bucket name {name:?}: a name is lowercase letters, digits, '_', '-' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Every bucket defined, as one node knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The latest definition of each name, deleted or not.
    buckets: BTreeMap<String, Bucket>,
    /// Every bucket ever deleted, by id, with when: their data is refused and dropped,
    /// whatever has become of their names since.
    gone: BTreeMap<BucketId, Version>,
}

impl Catalog {
    /// A live bucket by name (`default` is always there).
    pub fn get(&self, name: &str) -> Option<Bucket> {
        if name == DEFAULT_BUCKET {
            return Some(Bucket::default_bucket());
        }
        self.buckets
            .get(name)
            .filter(|b| b.deleted.is_none())
            .cloned()
    }

    /// The bucket of an id, deleted or not.
    pub fn by_id(&self, id: BucketId) -> Option<Bucket> {
        if id == DEFAULT_BUCKET_ID {
            return Some(Bucket::default_bucket());
        }
        self.buckets.values().find(|b| b.id == id).cloned()
    }

    /// Whether keys of bucket `id` may be stored: not those of a deleted bucket, nor of
    /// one not known (yet) — the data of a bucket arrives only after its definition,
    /// which every write to it needed first.
    pub fn is_live(&self, id: BucketId) -> bool {
        id == DEFAULT_BUCKET_ID
            || (!self.gone.contains_key(&id)
                && self
                    .buckets
                    .values()
                    .any(|b| b.id == id && b.deleted.is_none()))
    }

    /// Whether bucket `id` was deleted: its data is refused and dropped.
    pub fn is_gone(&self, id: BucketId) -> bool {
        self.gone.contains_key(&id)
    }

    /// The ids of deleted buckets.
    pub fn deleted(&self) -> impl Iterator<Item = BucketId> + '_ {
        self.gone.keys().copied()
    }

    /// Every bucket, live ones first by name, `default` among them.
    pub fn list(&self) -> Vec<Bucket> {
        let mut out = vec![Bucket::default_bucket()];
        out.extend(
            self.buckets
                .values()
                .filter(|b| b.deleted.is_none())
                .cloned(),
        );
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Defines a bucket: `id` is drawn by the caller, `created` is the create's version.
    pub fn create(
        &mut self,
        name: &str,
        kind: BucketType,
        ttl_ms: Option<u64>,
        consistency: Option<Consistency>,
        id: BucketId,
        created: Version,
    ) -> Result<Bucket, String> {
        check_name(name)?;
        if let Some(ttl) = ttl_ms {
            check_ttl(ttl)?;
        }
        if name == DEFAULT_BUCKET {
            return Err("the default bucket always exists and cannot be created".into());
        }
        if kind == BucketType::Linearizable {
            if ttl_ms.is_some() {
                return Err(format!(
                    "a linearizable bucket's keys do not expire: create {name} without --ttl"
                ));
            }
            if consistency.is_some() {
                return Err(format!(
                    "a linearizable bucket's operations are linearizable: create {name} without --consistency (a read may still ask for one, a possibly stale local read)"
                ));
            }
        }
        if let Some(existing) = self.get(name) {
            return Err(format!(
                "bucket {name} exists already (type {}); a bucket's type never changes: delete it first to make a new one",
                existing.kind.as_str()
            ));
        }
        let defined = self.buckets.len() + self.gone.len();
        if defined >= BUCKETS_MAX {
            return Err(format!(
                "too many buckets: the cluster has defined {defined} (deleted ones count), the limit is {BUCKETS_MAX}"
            ));
        }
        if id == DEFAULT_BUCKET_ID || self.by_id(id).is_some() || self.gone.contains_key(&id) {
            return Err(format!("bucket id {id} is taken; try again"));
        }
        let bucket = Bucket {
            name: name.to_string(),
            id,
            kind,
            ttl_ms,
            consistency,
            created,
            deleted: None,
        };
        self.buckets.insert(name.to_string(), bucket.clone());
        Ok(bucket)
    }

    /// Deletes a bucket: its data goes everywhere, and is refused wherever it turns up.
    pub fn delete(&mut self, name: &str, at: Version) -> Result<Bucket, String> {
        if name == DEFAULT_BUCKET {
            return Err("the default bucket cannot be deleted".into());
        }
        let Some(bucket) = self.buckets.get_mut(name).filter(|b| b.deleted.is_none()) else {
            return Err(format!("no bucket named {name}"));
        };
        let at = at.max(bucket.created);
        bucket.deleted = Some(at);
        let bucket = bucket.clone();
        self.gone.insert(bucket.id, at);
        Ok(bucket)
    }

    /// Takes in what `other` knows: per name, the later create wins; a deletion stays.
    /// Whether anything changed.
    pub fn merge(&mut self, other: &Catalog) -> bool {
        let mut changed = false;
        for (&id, &at) in &other.gone {
            if self.gone.insert(id, at).is_none() {
                changed = true;
            }
        }
        for (name, theirs) in &other.buckets {
            match self.buckets.get_mut(name) {
                None => {
                    self.buckets.insert(name.clone(), theirs.clone());
                    changed = true;
                }
                Some(mine) if theirs.created > mine.created => {
                    *mine = theirs.clone();
                    changed = true;
                }
                Some(mine) if theirs.created == mine.created && theirs.deleted > mine.deleted => {
                    mine.deleted = theirs.deleted;
                    changed = true;
                }
                Some(_) => {}
            }
        }
        changed
    }

    /// A digest of the whole catalog: equal catalogs, equal digests.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).expect("a catalog always encodes");
        let hash = blake3::hash(&bytes);
        u64::from_be_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a catalog always encodes")
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Catalog, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("bucket catalog: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_key_holds_its_user_key_to_480_bytes_whatever_its_bucket() {
        let in_bucket = |len| internal_key(7, &vec![b'k'; len]);
        assert!(check_stored_key(&in_bucket(crate::limits::KEY_BYTES_MAX)).is_ok());
        assert_eq!(
            in_bucket(crate::limits::KEY_BYTES_MAX).len(),
            crate::limits::STORED_KEY_BYTES_MAX
        );
        assert_eq!(
            check_stored_key(&in_bucket(crate::limits::KEY_BYTES_MAX + 1)),
            Err(crate::limits::LimitError::KeyTooLong { len: 481 })
        );
        // A key of `default` as long as a bucketed one is still refused: no client
        // could have written it.
        assert_eq!(
            check_stored_key(&[b'k'; crate::limits::STORED_KEY_BYTES_MAX]),
            Err(crate::limits::LimitError::KeyTooLong {
                len: crate::limits::STORED_KEY_BYTES_MAX
            })
        );
        assert_eq!(
            check_stored_key(b""),
            Err(crate::limits::LimitError::EmptyKey)
        );
    }
    use crate::hlc::Timestamp;
    use crate::record::NodeId;

    fn v(hlc: u64) -> Version {
        Version {
            hlc: Timestamp::from_u64(hlc),
            node: NodeId(1),
        }
    }

    #[test]
    fn keys_of_default_stay_as_written_and_others_carry_their_bucket() {
        assert_eq!(internal_key(0, b"k"), b"k");
        let k = internal_key(7, b"k");
        assert_eq!(k.len(), BUCKET_KEY_OVERHEAD + 1);
        assert_eq!(split_key(&k), (7, b"k".as_slice()));
        assert_eq!(split_key(b"k"), (0, b"k".as_slice()));
    }

    #[test]
    fn names_are_checked_and_say_the_rule() {
        assert!(check_name("hits").is_ok());
        assert!(check_name("a.b_c-1").is_ok());
        assert!(check_name("Hits").unwrap_err().contains("lowercase"));
        assert!(check_name("").unwrap_err().contains("1 to 64"));
        assert!(check_name(&"x".repeat(65)).unwrap_err().contains("1 to 64"));
    }

    #[test]
    fn concurrent_creates_resolve_alike_and_a_deletion_stays() {
        let (mut a, mut b) = (Catalog::default(), Catalog::default());
        a.create("tags", BucketType::Set, None, None, 5, v(10))
            .unwrap();
        b.create("tags", BucketType::Counter, None, None, 6, v(20))
            .unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.get("tags").unwrap().kind, BucketType::Counter);
        assert!(!ab.is_live(5) && ab.is_live(6));
        // Deleted, and created again: a new id; the old data is refused everywhere.
        ab.delete("tags", v(30)).unwrap();
        assert!(ab.get("tags").is_none());
        assert!(!ab.is_live(6));
        ba.merge(&ab);
        assert_eq!(ba.digest(), ab.digest());
        assert!(a.merge(&ab));
        assert!(!a.is_live(6) && a.get("tags").is_none());
        assert!(
            a.create("tags", BucketType::Set, None, None, 6, v(40))
                .is_err()
        );
        let again = a
            .create("tags", BucketType::Set, None, None, 8, v(40))
            .unwrap();
        assert_eq!(again.id, 8);
        assert!(
            a.create("tags", BucketType::Set, None, None, 9, v(41))
                .unwrap_err()
                .contains("exists")
        );
        assert_eq!(Catalog::decode(&a.encode()).unwrap(), a);
    }
}
