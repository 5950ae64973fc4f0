//! What every ICN document shares: its id, its kind, the genesis fields, and a
//! reader that can look at the document now or as it stood at given heads.

use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use automerge::iter::DocItem;
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value, ValueRef};

use crate::did::Did;

/// Version of the document schema written into every genesis change.
pub const SCHEMA_VERSION: i64 = 1;

/// A document's id: the hash of its genesis change.
///
/// Binding the id to the genesis means nobody can write a second, competing
/// genesis for the same document: every valid change of the document has the
/// genesis in its causal past, and the only change without dependencies is the
/// one whose hash is the id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(pub [u8; 32]);

impl DocId {
    /// The id of the document whose genesis change has this hash.
    pub fn from_genesis(hash: ChangeHash) -> Self {
        DocId(hash.0)
    }

    /// The genesis change hash.
    pub fn genesis(&self) -> ChangeHash {
        ChangeHash(self.0)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocId({self})")
    }
}

impl serde::Serialize for DocId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a string is not a document id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a document id is 32 bytes in base58btc")]
pub struct DocIdError;

impl FromStr for DocId {
    type Err = DocIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 44 {
            return Err(DocIdError);
        }
        let bytes = bs58::decode(s).into_vec().map_err(|_| DocIdError)?;
        Ok(DocId(bytes.try_into().map_err(|_| DocIdError)?))
    }
}

/// The kinds of document, written at the root as `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocKind {
    /// A co-op: profile, policy, members, devices, relays.
    Coop,
    /// A governance domain: rules, members, proposals, votes.
    Domain,
}

impl DocKind {
    /// The value of the root `type` key.
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Coop => "coop",
            DocKind::Domain => "domain",
        }
    }

    /// Reads the kind of a document.
    pub fn of(r: Reader<'_>) -> Option<DocKind> {
        Self::parse(&r.str(&ObjId::Root, Self::ROOT_KEY)?)
    }

    /// The root key that holds the kind.
    pub const ROOT_KEY: &'static str = "type";

    /// Parses the value of the root `type` key.
    pub fn parse(value: &str) -> Option<DocKind> {
        match value {
            "coop" => Some(DocKind::Coop),
            "domain" => Some(DocKind::Domain),
            _ => None,
        }
    }
}

/// Reads a document as it stands, or as it stood at some heads (its state in
/// the causal past of those heads).
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    doc: &'a Automerge,
    heads: Option<&'a [ChangeHash]>,
    cache: Option<&'a ReadCache>,
}

/// One map key as a [`ReadCache`] keeps it: the winning value, its id, and
/// whether other values conflict with it.
type Slot = (Value<'static>, ObjId, bool);

/// What a [`ReadCache`] read of one state of one document, for a [`Reader`]
/// of that state to answer from.
///
/// Judging a batch of ledger entries by many members reads the same maps
/// (the member list, each member's record) over and over; Automerge finds a
/// key by a search of the map's operations each time, while one pass over a
/// map reads all its keys for about the price of a few searches. So a
/// cached reader keeps each answer it read, and once it has asked one map
/// for [`ReadCache::FILL_AFTER`] different keys, reads that map whole and
/// answers every key of it from there. A state asked about once or twice
/// (an entry citing heads no other entry cites) never pays for reading a
/// large member list whole. A map below the root is read whole together
/// with every map below it (the member list with each member's record, its
/// devices and their records) in one forward walk over the document's
/// operations, which costs about what a few searches do: the root's maps
/// are the document's collections, each read whole on its own.
///
/// A cache belongs to one state: the document at given heads. Only readers
/// of that state may use it ([`Reader::cached`]).
#[derive(Default)]
pub struct ReadCache {
    maps: Mutex<HashMap<ObjId, Cached>>,
}

/// What a [`ReadCache`] holds of one map.
enum Cached {
    /// The keys asked so far, each with its winning value.
    Asked(HashMap<String, Option<(Value<'static>, ObjId)>>),
    /// Every key, read in one pass.
    Whole(Arc<HashMap<String, Slot>>),
}

impl ReadCache {
    /// Different keys of one map asked before it is read whole.
    pub const FILL_AFTER: usize = 3;

    /// The winning value at `obj[key]`, as `r` reads it.
    fn get(&self, r: &Reader<'_>, obj: &ObjId, key: &str) -> Option<(Value<'static>, ObjId)> {
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if !maps.contains_key(obj) {
            maps.insert(obj.clone(), Cached::Asked(HashMap::new()));
        }
        let cached = maps.get_mut(obj)?;
        if let Cached::Asked(asked) = cached {
            if let Some(got) = asked.get(key) {
                return got.clone();
            }
            if asked.len() + 1 < Self::FILL_AFTER {
                let got = r.get_direct(obj, key).map(|(v, id)| (v.into_owned(), id));
                asked.insert(key.to_owned(), got.clone());
                return got;
            }
            if *obj == ObjId::Root {
                *cached = Cached::Whole(Arc::new(Self::read_whole(r, obj)));
            } else {
                // A collection (the member list): every map below it too.
                for (map, keys) in Self::read_tree(r, obj) {
                    maps.insert(map, Cached::Whole(Arc::new(keys)));
                }
            }
        }
        match maps.get(obj)? {
            Cached::Whole(map) => map.get(key).map(|(v, id, _)| (v.clone(), id.clone())),
            Cached::Asked(_) => None,
        }
    }

    /// The map `obj` read whole, if it has been.
    fn whole(&self, obj: &ObjId) -> Option<Arc<HashMap<String, Slot>>> {
        let maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        match maps.get(obj) {
            Some(Cached::Whole(map)) => Some(map.clone()),
            _ => None,
        }
    }

    fn read_whole(r: &Reader<'_>, obj: &ObjId) -> HashMap<String, Slot> {
        let items = match r.heads {
            None => r.doc.map_range(obj, ..),
            Some(heads) => r.doc.map_range_at(obj, .., heads),
        };
        items
            .map(|item| {
                let id = item.id();
                let slot = (item.value.into_value(), id, item.conflict);
                (item.key.into_owned(), slot)
            })
            .collect()
    }

    /// `obj` and every map below it, read whole in one pass: Automerge
    /// stores an object's operations together and its objects in the order
    /// they were made, so one walk forward over them costs far less than a
    /// search per map.
    fn read_tree(r: &Reader<'_>, obj: &ObjId) -> HashMap<ObjId, HashMap<String, Slot>> {
        let mut maps: HashMap<ObjId, HashMap<String, Slot>> = HashMap::new();
        maps.insert(obj.clone(), HashMap::new());
        for item in r.doc.iter_at(obj, r.heads) {
            let DocItem::Map(m) = item.item else {
                continue;
            };
            let id = m.id();
            if matches!(m.value, ValueRef::Object(ObjType::Map)) {
                // A map with no keys yet is read whole too.
                maps.entry(id.clone()).or_default();
            }
            let slot = (m.value.into_value(), id, m.conflict);
            maps.entry((*item.obj).clone())
                .or_default()
                .insert(m.key.into_owned(), slot);
        }
        maps
    }
}

impl<'a> Reader<'a> {
    /// Reads the document as it stands.
    pub fn now(doc: &'a Automerge) -> Self {
        Reader {
            doc,
            heads: None,
            cache: None,
        }
    }

    /// Reads the document as it stood at `heads`, which must all be in it.
    pub fn at(doc: &'a Automerge, heads: &'a [ChangeHash]) -> Self {
        Reader {
            doc,
            heads: Some(heads),
            cache: None,
        }
    }

    /// This reader, keeping the maps it reads often in `cache`, which must
    /// hold nothing but what readers of this same state put there.
    pub fn cached(self, cache: &'a ReadCache) -> Self {
        Reader {
            cache: Some(cache),
            ..self
        }
    }

    /// The document read.
    pub fn doc(&self) -> &'a Automerge {
        self.doc
    }

    fn get(&self, obj: &ObjId, key: &str) -> Option<(Value<'a>, ObjId)> {
        match self.cache {
            Some(cache) => cache.get(self, obj, key),
            None => self.get_direct(obj, key),
        }
    }

    fn get_direct(&self, obj: &ObjId, key: &str) -> Option<(Value<'a>, ObjId)> {
        let got = match self.heads {
            None => self.doc.get(obj, key),
            Some(heads) => self.doc.get_at(obj, key, heads),
        };
        got.ok().flatten()
    }

    /// Every value at `obj[key]`, conflicting writes included, in
    /// Automerge's order (the winner last).
    fn get_all(&self, obj: &ObjId, key: &str) -> Vec<(Value<'a>, ObjId)> {
        if let Some(map) = self.cache.and_then(|c| c.whole(obj)) {
            match map.get(key) {
                None => return Vec::new(),
                Some((v, id, false)) => return vec![(v.clone(), id.clone())],
                Some((_, _, true)) => {}
            }
        }
        let all = match self.heads {
            None => self.doc.get_all(obj, key),
            Some(heads) => self.doc.get_all_at(obj, key, heads),
        };
        all.unwrap_or_default()
    }

    /// Every map stored at `obj[key]`, conflicting writes included, in
    /// Automerge's order (the one [`Reader::map`] reads last).
    pub(crate) fn maps_all(&self, obj: &ObjId, key: &str) -> Vec<ObjId> {
        self.get_all(obj, key)
            .into_iter()
            .filter_map(|(v, id)| matches!(v, Value::Object(ObjType::Map)).then_some(id))
            .collect()
    }

    /// Every string stored at `obj[key]`, conflicting writes included, in
    /// Automerge's order.
    pub(crate) fn strs_all(&self, obj: &ObjId, key: &str) -> Vec<String> {
        self.get_all(obj, key)
            .into_iter()
            .filter_map(|(v, _)| match v {
                Value::Scalar(s) => match s.as_ref() {
                    ScalarValue::Str(s) => Some(s.to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// The map stored at `obj[key]`, if it is one.
    pub(crate) fn map(&self, obj: &ObjId, key: &str) -> Option<ObjId> {
        match self.get(obj, key)? {
            (Value::Object(ObjType::Map), id) => Some(id),
            _ => None,
        }
    }

    /// Follows a path of map keys from the root.
    pub(crate) fn map_path(&self, path: &[&str]) -> Option<ObjId> {
        path.iter()
            .try_fold(ObjId::Root, |obj, key| self.map(&obj, key))
    }

    fn scalar(&self, obj: &ObjId, key: &str) -> Option<ScalarValue> {
        match self.get(obj, key)? {
            (Value::Scalar(s), _) => Some(s.into_owned()),
            _ => None,
        }
    }

    /// The string at `obj[key]`.
    pub(crate) fn str(&self, obj: &ObjId, key: &str) -> Option<String> {
        match self.scalar(obj, key)? {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    /// The integer at `obj[key]`.
    pub(crate) fn int(&self, obj: &ObjId, key: &str) -> Option<i64> {
        match self.scalar(obj, key)? {
            ScalarValue::Int(i) => Some(i),
            ScalarValue::Uint(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The boolean at `obj[key]`.
    pub(crate) fn bool(&self, obj: &ObjId, key: &str) -> Option<bool> {
        match self.scalar(obj, key)? {
            ScalarValue::Boolean(b) => Some(b),
            _ => None,
        }
    }

    /// The keys of the map `obj`, sorted.
    pub(crate) fn keys(&self, obj: &ObjId) -> Vec<String> {
        match self.heads {
            None => self.doc.keys(obj).collect(),
            Some(heads) => self.doc.keys_at(obj, heads).collect(),
        }
    }

    /// The DID-keyed entries of the map `obj`, skipping keys that are not DIDs.
    pub(crate) fn did_keys(&self, obj: &ObjId) -> Vec<Did> {
        self.keys(obj)
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect()
    }
}

/// The type a path holds, checked against every operation that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A map object.
    Map,
    /// A string of at most the given number of bytes.
    Str(usize),
    /// A signed integer (Automerge `int`).
    Int,
    /// A non-negative integer (Automerge `int` or `uint`).
    NonNegative,
    /// An integer in an inclusive range (Automerge `int` or `uint`).
    Range(i64, i64),
    /// A string of at most the given number of bytes, not blank.
    Text(usize),
    /// A boolean.
    Bool,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// A DID string.
    Did,
}

/// A path that the schema refuses, or a value of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// No field of the schema lives at this path.
    #[error("no field at {0}")]
    UnknownPath(String),
    /// An operation writes a value of the wrong type.
    #[error("{path} holds {expected}, not what the change writes")]
    WrongShape {
        /// The path written.
        path: String,
        /// What the schema wants there.
        expected: String,
    },
    /// Lists, text objects, counters and marks have no place in the schema.
    #[error("{0}: lists, text, counters and marks are not part of the schema")]
    UnsupportedOp(String),
    /// A key that must be an identifier is malformed.
    #[error("{kind} {value:?} is not valid: {reason}")]
    BadKey {
        /// What kind of key.
        kind: &'static str,
        /// The key.
        value: String,
        /// Why.
        reason: String,
    },
    /// A required field is missing or malformed when reading a typed view.
    #[error("the document has no valid {0}")]
    Missing(String),
    /// Something other than the schema went wrong inside Automerge.
    #[error("automerge: {0}")]
    Automerge(String),
    /// What a typed operation would create exists already.
    #[error("{0} already exists")]
    Exists(String),
    /// A value given to a typed operation is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<automerge::AutomergeError> for SchemaError {
    fn from(e: automerge::AutomergeError) -> Self {
        SchemaError::Automerge(e.to_string())
    }
}

/// Checks that a put of `value` (or the creation of a map, when `value` is
/// `None`) matches `shape`.
pub fn check_shape(
    path: &str,
    shape: Shape,
    value: Option<&ScalarValue>,
) -> Result<(), SchemaError> {
    let ok = match (shape, value) {
        (Shape::Map, None) => true,
        (_, None) | (Shape::Map, Some(_)) => false,
        (Shape::Str(max), Some(ScalarValue::Str(s))) => s.len() <= max,
        (Shape::Int, Some(ScalarValue::Int(_))) => true,
        (Shape::NonNegative, Some(ScalarValue::Int(i))) => *i >= 0,
        (Shape::NonNegative, Some(ScalarValue::Uint(u))) => i64::try_from(*u).is_ok(),
        (Shape::Range(lo, hi), Some(ScalarValue::Int(i))) => (lo..=hi).contains(i),
        (Shape::Range(lo, hi), Some(ScalarValue::Uint(u))) => {
            i64::try_from(*u).is_ok_and(|i| (lo..=hi).contains(&i))
        }
        (Shape::Text(max), Some(ScalarValue::Str(s))) => s.len() <= max && !s.trim().is_empty(),
        (Shape::Bool, Some(ScalarValue::Boolean(_))) => true,
        (Shape::OneOf(options), Some(ScalarValue::Str(s))) => options.contains(&s.as_str()),
        (Shape::Did, Some(ScalarValue::Str(s))) => s.parse::<Did>().is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SchemaError::WrongShape {
            path: path.to_owned(),
            expected: describe(shape),
        })
    }
}

fn describe(shape: Shape) -> String {
    match shape {
        Shape::Map => "a map".into(),
        Shape::Str(max) => format!("a string of at most {max} bytes"),
        Shape::Int => "an integer".into(),
        Shape::NonNegative => "a non-negative integer".into(),
        Shape::Range(lo, hi) => format!("an integer from {lo} to {hi}"),
        Shape::Text(max) => format!("a non-blank string of at most {max} bytes"),
        Shape::Bool => "a boolean".into(),
        Shape::OneOf(options) => format!("one of {}", options.join(", ")),
        Shape::Did => "a DID".into(),
    }
}

/// Checks a slug-like identifier (co-op ids, domain ids, proposal ids, units):
/// 1 to 64 bytes of `a-z 0-9 - _ . :`, starting with a letter or digit.
pub fn check_ident(kind: &'static str, value: &str) -> Result<(), SchemaError> {
    let bad = |reason: &str| SchemaError::BadKey {
        kind,
        value: value.chars().take(80).collect(),
        reason: reason.into(),
    };
    if value.is_empty() || value.len() > 64 {
        return Err(bad("it must have 1 to 64 bytes"));
    }
    let first_ok = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(bad(
            "use a-z, 0-9, '-', '_', '.', ':', starting with a letter or digit",
        ))
    }
}

pub(crate) fn parse_did_key(kind: &'static str, value: &str) -> Result<Did, SchemaError> {
    value
        .parse()
        .map_err(|e: crate::did::DidError| SchemaError::BadKey {
            kind,
            value: value.chars().take(80).collect(),
            reason: e.to_string(),
        })
}

pub(crate) fn parse_device_key(value: &str) -> Result<Did, SchemaError> {
    Did::from_key_string(value).map_err(|e| SchemaError::BadKey {
        kind: "device key",
        value: value.chars().take(80).collect(),
        reason: e.to_string(),
    })
}

/// The fields every document's genesis writes at its root, and nothing later
/// may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenesisField {
    /// `type`: the [`DocKind`].
    Type,
    /// `schema`: [`SCHEMA_VERSION`].
    Schema,
    /// `id`: the human-readable slug.
    Id,
    /// `creator`: the creator's DID.
    Creator,
    /// `created_at`: unix seconds.
    CreatedAt,
}

impl GenesisField {
    pub(crate) fn classify(key: &str) -> Option<(GenesisField, Shape)> {
        Some(match key {
            "type" => (GenesisField::Type, Shape::OneOf(&["coop", "domain"])),
            "schema" => (GenesisField::Schema, Shape::Int),
            "id" => (GenesisField::Id, Shape::Str(64)),
            "creator" => (GenesisField::Creator, Shape::Did),
            "created_at" => (GenesisField::CreatedAt, Shape::NonNegative),
            _ => return None,
        })
    }
}

/// The genesis facts of a document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Genesis {
    /// The kind.
    pub kind: DocKind,
    /// The human-readable slug.
    pub slug: String,
    /// Who created it.
    pub creator: Did,
    /// When, unix seconds.
    pub created_at: i64,
}

/// A document's human id (`id` at the root, its slug), as written; empty
/// when it has none.
pub fn slug(r: Reader<'_>) -> String {
    r.str(&ObjId::Root, "id").unwrap_or_default()
}

impl Genesis {
    /// Reads the genesis fields; `None` when any is missing or malformed.
    pub fn read(r: Reader<'_>) -> Option<Genesis> {
        let root = ObjId::Root;
        if r.int(&root, "schema")? != SCHEMA_VERSION {
            return None;
        }
        Some(Genesis {
            kind: DocKind::of(r)?,
            slug: r.str(&root, "id")?,
            creator: r.str(&root, "creator")?.parse().ok()?,
            created_at: r.int(&root, "created_at")?,
        })
    }
}

/// Writes the genesis fields at the root.
pub(crate) fn write_genesis(
    tx: &mut impl automerge::transaction::Transactable,
    kind: DocKind,
    slug: &str,
    creator: &Did,
    created_at: i64,
) -> Result<(), SchemaError> {
    check_ident("document id", slug)?;
    let root = ObjId::Root;
    tx.put(&root, "type", kind.as_str())?;
    tx.put(&root, "schema", SCHEMA_VERSION)?;
    tx.put(&root, "id", slug)?;
    tx.put(&root, "creator", creator.to_string())?;
    tx.put(&root, "created_at", created_at)?;
    Ok(())
}

/// Returns the map at `parent[key]`, creating it when absent.
pub(crate) fn ensure_map(
    tx: &mut impl automerge::transaction::Transactable,
    parent: &ObjId,
    key: &str,
) -> Result<ObjId, SchemaError> {
    match tx.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Ok(tx.put_object(parent, key, ObjType::Map)?),
    }
}

/// Returns the existing map at `path` or an error naming what is missing.
pub(crate) fn existing_map(
    tx: &impl ReadDoc,
    path: &[&str],
    what: &str,
) -> Result<ObjId, SchemaError> {
    let mut obj = ObjId::Root;
    for key in path {
        obj = match tx.get(&obj, *key)? {
            Some((Value::Object(ObjType::Map), id)) => id,
            _ => return Err(SchemaError::Missing(what.to_owned())),
        };
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;

    /// Every question a reader answers, for each object and key.
    fn answers(r: Reader<'_>, objs: &[ObjId], keys: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for obj in objs {
            for key in keys {
                out.push(format!(
                    "{obj} {key}: {:?} {:?} {:?} {:?} {:?} {:?}",
                    r.str(obj, key),
                    r.int(obj, key),
                    r.bool(obj, key),
                    r.map(obj, key),
                    r.maps_all(obj, key),
                    r.strs_all(obj, key)
                ));
            }
        }
        out
    }

    #[test]
    fn a_cached_reader_answers_as_automerge_does_now_and_at_old_heads_with_conflicts()
    -> Result<(), automerge::AutomergeError> {
        let mut a = AutoCommit::new();
        let members = a.put_object(ROOT, "members", ObjType::Map)?;
        a.put(&members, "x", "1")?;
        let y = a.put_object(&members, "y", ObjType::Map)?;
        a.put(&y, "status", "active")?;
        a.put(&y, "limit", 10i64)?;
        let devices = a.put_object(&y, "devices", ObjType::Map)?;
        let k1 = a.put_object(&devices, "k1", ObjType::Map)?;
        a.put(&k1, "revoked", false)?;
        let log = a.put_object(&y, "log", ObjType::List)?;
        let entry = a.insert_object(&log, 0, ObjType::Map)?;
        a.put(&entry, "status", "logged")?;
        a.put_object(&y, "empty", ObjType::Map)?;
        a.commit();
        let before = a.get_heads();
        let mut b = a.fork();
        b.put(&k1, "revoked", true)?;
        b.put(&k1, "proof", "p")?;
        a.delete(&devices, "k1")?;
        let k2 = a.put_object(&devices, "k2", ObjType::Map)?;
        a.put(&k2, "status", "new")?;
        a.put(&members, "x", "2")?;
        b.put(&members, "x", "3")?;
        b.put(&y, "status", "removed")?;
        a.put(&y, "frozen", true)?;
        a.put_object(&members, "w", ObjType::Map)?;
        b.put_object(&members, "w", ObjType::Map)?;
        a.put(&members, "z", 5i64)?;
        a.merge(&mut b)?;
        let doc = a.document();
        let empty = doc.get(&y, "empty")?.map(|(_, id)| id).unwrap_or(ROOT);
        let objs = [ROOT, members, y, devices, k1, k2, entry, empty];
        let keys = [
            "members", "x", "y", "w", "z", "status", "limit", "frozen", "nothing", "devices", "k1",
            "k2", "revoked", "proof", "log", "empty",
        ];
        for r in [Reader::now(doc), Reader::at(doc, &before)] {
            let plain = answers(r, &objs, &keys);
            let cache = ReadCache::default();
            // Asked twice: the first pass asks each map key by key until it
            // is read whole, the second answers from the whole map.
            assert_eq!(answers(r.cached(&cache), &objs, &keys), plain);
            assert_eq!(answers(r.cached(&cache), &objs, &keys), plain);
        }
        // The conflicts are really there to be answered.
        let r = Reader::now(doc);
        assert_eq!(r.strs_all(&objs[1], "x").len(), 2);
        assert_eq!(r.maps_all(&objs[1], "w").len(), 2);

        // A map below the root is read whole with every map below it; the
        // root read whole reads no collection in it.
        let cache = ReadCache::default();
        let r = Reader::now(doc).cached(&cache);
        for key in ["x", "z", "nothing"] {
            r.get(&objs[1], key);
        }
        assert!(cache.whole(&objs[1]).is_some());
        assert!(cache.whole(&objs[2]).is_some());
        assert_eq!(
            r.str(&objs[2], "status").as_deref(),
            Reader::now(doc).str(&objs[2], "status").as_deref()
        );
        let cache = ReadCache::default();
        let r = Reader::now(doc).cached(&cache);
        for key in ["members", "a", "b"] {
            r.get(&ROOT, key);
        }
        assert!(cache.whole(&ROOT).is_some());
        r.get(&objs[1], "x");
        assert!(cache.whole(&objs[1]).is_none());
        Ok(())
    }
}
