//! Ed25519 identities: key pairs, signing, verification.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::SigningKey;
use icn_schemas::Did;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

/// An Ed25519 key pair: a member's or a device's or a node's identity.
///
/// The secret never leaves the process except through [`crate::keystore`],
/// encrypted. Dropping a `Keypair` zeroes its secret.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    did: Did,
}

/// The operating system could not provide randomness.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomnessError(String);

impl Keypair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Result<Self, RandomnessError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut()).map_err(|e| RandomnessError(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key pair of a 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(secret);
        // A key derived from a secret by hashing is never a small-order point.
        let did = Did::from_key(signing.verifying_key())
            .expect("an ed25519 public key derived from a secret is never weak");
        Keypair { signing, did }
    }

    /// The 32-byte secret, zeroed when dropped.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The DID of this key pair.
    pub fn did(&self) -> Did {
        self.did
    }

    /// This device's consent to act for `member`, for
    /// [`icn_schemas::coop::add_device`].
    pub fn device_proof(&self, member: &Did) -> [u8; 64] {
        self.sign(&icn_schemas::coop::device_proof_message(member))
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(message).to_bytes()
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.did)
    }
}

/// A signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature does not match the claimed key {0}")]
pub struct BadSignature(pub Did);

/// Verifies `signature` over `message` by `did`'s key.
///
/// Every peer must accept exactly the same signatures, whether it checks them
/// one by one or in a batch, or replicas disagree on what is valid. The rule
/// is the *cofactored* Ed25519 equation `[8]([s]B - R - [k]A) = 0`, with
/// `k = SHA-512(R ‖ A ‖ M) mod l`, `s` canonical, and `R` and `A` canonical
/// encodings of curve points (`A` not of small order). Batch verification
/// ([`verify_batch`]) checks the same equation with random weights, so it
/// accepts a batch exactly when every signature in it passes alone (but for
/// a 2⁻¹²⁸ chance). `ed25519-dalek`'s own batch check is cofactorless and
/// derives its weights from the inputs: a sender could grind a signature
/// that it accepts and `verify_strict` refuses.
pub fn verify(did: &Did, message: &[u8], signature: &[u8; 64]) -> Result<(), BadSignature> {
    let parts = Parts::parse(did, message, signature).ok_or(BadSignature(*did))?;
    let check =
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&-parts.k, &parts.a, &parts.s) - parts.r;
    if check.mul_by_cofactor().is_identity() {
        Ok(())
    } else {
        Err(BadSignature(*did))
    }
}

/// One signature to check in a batch.
#[derive(Debug, Clone, Copy)]
pub struct SignedMessage<'a> {
    /// The claimed signer.
    pub did: &'a Did,
    /// What was signed.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a [u8; 64],
}

/// Whether every signature verifies, with the rule of [`verify`], in one
/// multi-scalar multiplication: about twice the rate of one-by-one checks.
/// On `false`, check them one by one to find the bad ones.
pub fn verify_batch(items: &[SignedMessage<'_>]) -> bool {
    // Each key is decompressed once, and its terms share one point below.
    let mut keys: std::collections::HashMap<[u8; 32], (usize, EdwardsPoint)> =
        std::collections::HashMap::new();
    let mut parts = Vec::with_capacity(items.len());
    let mut key_index = Vec::with_capacity(items.len());
    for i in items {
        let index = keys.len();
        let (index, a) = match keys.get(i.did.as_bytes()) {
            Some(&(index, a)) => (index, a),
            None => {
                let Some(a) = Parts::key(i.did) else {
                    return false;
                };
                keys.insert(*i.did.as_bytes(), (index, a));
                (index, a)
            }
        };
        let Some(p) = Parts::parse_with_key(i.did, a, i.message, i.signature) else {
            return false;
        };
        parts.push(p);
        key_index.push(index);
    }
    // Weights from the operating system, not from the inputs, so no sender
    // can choose signatures that cancel out; one call for all of them.
    let mut seeds = vec![0u8; 16 * parts.len()];
    if getrandom::fill(&mut seeds).is_err() {
        return false;
    }
    let weights: Vec<Scalar> = seeds
        .chunks_exact(16)
        .map(|seed| {
            let mut wide = [0u8; 32];
            wide[..16].copy_from_slice(seed);
            Scalar::from_bytes_mod_order(wide)
        })
        .collect();
    // [Σ z·s]B - Σ z·R - Σ (z·k)A = 0, times the cofactor; the A terms of
    // one key are summed into one.
    let b_coefficient: Scalar = parts.iter().zip(&weights).map(|(p, z)| z * p.s).sum();
    let mut key_scalars = vec![Scalar::ZERO; keys.len()];
    let mut key_points = vec![ED25519_BASEPOINT_POINT; keys.len()];
    for (index, a) in keys.values() {
        key_points[*index] = *a;
    }
    for ((p, z), &index) in parts.iter().zip(&weights).zip(&key_index) {
        key_scalars[index] -= z * p.k;
    }
    let scalars = std::iter::once(b_coefficient)
        .chain(weights.iter().map(|z| -z))
        .chain(key_scalars);
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(parts.iter().map(|p| p.r))
        .chain(key_points);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// A signature's parts, parsed and checked for canonical encodings.
struct Parts {
    r: EdwardsPoint,
    a: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// A point from its canonical encoding only.
fn canonical_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !canonical_encoding(bytes) {
        return None;
    }
    CompressedEdwardsY(*bytes).decompress()
}

/// Whether `bytes`, if it decompresses at all, is the one encoding of its
/// point, so that compressing the point gives `bytes` back: its y is below
/// p = 2^255 - 19, and its sign bit is clear where x = 0 (y = 1 or
/// y = p - 1), since -0 = 0. Checked on the bytes, which saves the field
/// inversion of compressing the point again.
fn canonical_encoding(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    let sign = y[31] >> 7;
    y[31] &= 0x7f;
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|b| *b == 0xff) && y[0] >= 0xed;
    if at_least_p {
        return false;
    }
    if sign == 1 {
        let one = y[0] == 1 && y[1..].iter().all(|b| *b == 0);
        let minus_one = y[0] == 0xec && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
        if one || minus_one {
            return false;
        }
    }
    true
}

/// Public keys decompressed recently. A co-op's members sign again and
/// again, and decompressing a key (a field inversion and a square root)
/// costs about a fifth of checking a signature in a batch; a key that is
/// not a valid public key is never kept.
static KEYS: std::sync::Mutex<Option<std::collections::HashMap<[u8; 32], EdwardsPoint>>> =
    std::sync::Mutex::new(None);

/// Keys remembered before the cache starts over.
const KEYS_MAX: usize = 8192;

impl Parts {
    /// A public key: a canonical point not of small order.
    fn key(did: &Did) -> Option<EdwardsPoint> {
        let kept = KEYS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|keys| keys.get(did.as_bytes()).copied());
        if kept.is_some() {
            return kept;
        }
        let a = canonical_point(did.as_bytes()).filter(|a| !a.is_small_order())?;
        let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
        let keys = keys.get_or_insert_with(Default::default);
        if keys.len() >= KEYS_MAX {
            keys.clear();
        }
        keys.insert(*did.as_bytes(), a);
        Some(a)
    }

    fn parse(did: &Did, message: &[u8], signature: &[u8; 64]) -> Option<Parts> {
        Self::parse_with_key(did, Self::key(did)?, message, signature)
    }

    fn parse_with_key(
        did: &Did,
        a: EdwardsPoint,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Option<Parts> {
        let r_bytes: [u8; 32] = signature[..32].try_into().ok()?;
        let r = canonical_point(&r_bytes)?;
        let s_bytes: [u8; 32] = signature[32..].try_into().ok()?;
        let s = Option::from(Scalar::from_canonical_bytes(s_bytes))?;
        let hash = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(did.as_bytes())
            .chain_update(message)
            .finalize();
        let wide: [u8; 64] = hash.as_slice().try_into().ok()?;
        Some(Parts {
            r,
            a,
            s,
            k: Scalar::from_bytes_mod_order_wide(&wide),
        })
    }
}

/// Delegations verified recently, by the hash of statement and signature.
/// A gateway's writes for one member all carry the same delegation, and a
/// relay forwards many of them: each is checked once, not at every write.
static VERIFIED_DELEGATIONS: std::sync::Mutex<
    Option<std::collections::HashMap<[u8; 32], icn_schemas::Delegation>>,
> = std::sync::Mutex::new(None);

/// Delegations remembered before the cache starts over.
const VERIFIED_DELEGATIONS_MAX: usize = 4096;

/// [`icn_schemas::SignedDelegation::verify`], remembered: the verdict is a
/// function of the bytes alone, so a delegation that verified once verifies
/// again. Refusals are not remembered.
pub fn verify_delegation(
    signed: &icn_schemas::SignedDelegation,
) -> Result<icn_schemas::Delegation, icn_schemas::DelegationError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(signed.statement.len() as u64).to_be_bytes());
    hasher.update(signed.statement.as_bytes());
    hasher.update(&signed.signature);
    let key = *hasher.finalize().as_bytes();
    let cached = VERIFIED_DELEGATIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|c| c.get(&key).cloned());
    if let Some(d) = cached {
        return Ok(d);
    }
    let d = signed.verify()?;
    let mut cache = VERIFIED_DELEGATIONS
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(Default::default);
    if cache.len() >= VERIFIED_DELEGATIONS_MAX {
        cache.clear();
    }
    cache.insert(key, d.clone());
    Ok(d)
}

/// Who signs local writes.
#[derive(Clone, Debug)]
pub enum Signer {
    /// A member's own device key.
    Device(Keypair),
    /// A member's key since it rotated away from its DID key: the key
    /// named in the co-op's `members/<did>/key`, writing for `member`.
    Rotated {
        /// The member.
        member: icn_schemas::Did,
        /// The key now holding the member's DID key powers.
        key: Keypair,
    },
    /// A node's key, writing for the member who signed the delegation.
    Delegated {
        /// The node's key (the Automerge actor).
        node: Keypair,
        /// The member's signed delegation naming this node.
        delegation: icn_schemas::SignedDelegation,
    },
}

impl Signer {
    /// The signer for `key` writing as `member`: the member's own DID key,
    /// or a key it rotated to.
    pub fn member_key(member: icn_schemas::Did, key: Keypair) -> Signer {
        if key.did() == member {
            Signer::Device(key)
        } else {
            Signer::Rotated { member, key }
        }
    }

    pub(crate) fn key(&self) -> &Keypair {
        match self {
            Signer::Device(k) | Signer::Rotated { key: k, .. } => k,
            Signer::Delegated { node, .. } => node,
        }
    }

    pub(crate) fn delegation(&self) -> Option<&icn_schemas::SignedDelegation> {
        match self {
            Signer::Device(_) | Signer::Rotated { .. } => None,
            Signer::Delegated { delegation, .. } => Some(delegation),
        }
    }
}

#[cfg(test)]
mod tests {

    /// The byte check says what decompressing and compressing again says,
    /// on the edge cases and on random and near-p encodings.
    #[test]
    fn canonical_encoding_matches_a_round_trip() {
        let round_trip = |b: &[u8; 32]| {
            CompressedEdwardsY(*b)
                .decompress()
                .map(|p| p.compress().to_bytes() == *b)
        };
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for low in [0u8, 1, 2, 0xeb, 0xec, 0xed, 0xee, 0xff] {
            for sign in [0u8, 0x80] {
                let mut near_p = [0xffu8; 32];
                near_p[0] = low;
                near_p[31] = 0x7f | sign;
                cases.push(near_p);
                let mut small = [0u8; 32];
                small[0] = low;
                small[31] = sign;
                cases.push(small);
            }
        }
        let mut seed = [7u8; 32];
        for _ in 0..20_000 {
            seed = *blake3::hash(&seed).as_bytes();
            cases.push(seed);
        }
        for b in &cases {
            if let Some(canonical) = round_trip(b) {
                assert_eq!(canonical_encoding(b), canonical, "{}", hex::encode(b));
            }
        }
    }

    use super::*;

    #[test]
    fn sign_and_verify() {
        let alice = Keypair::generate().expect("randomness");
        let bob = Keypair::generate().expect("randomness");
        let sig = alice.sign(b"hello");
        assert_eq!(verify(&alice.did(), b"hello", &sig), Ok(()));
        assert!(verify(&alice.did(), b"hellO", &sig).is_err());
        assert!(verify(&bob.did(), b"hello", &sig).is_err());
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(verify(&alice.did(), b"hello", &flipped).is_err());
    }

    #[test]
    fn batch_and_single_agree_on_honest_and_corrupted_signatures() {
        let keys: Vec<Keypair> = (0..20)
            .map(|_| Keypair::generate().expect("randomness"))
            .collect();
        let dids: Vec<Did> = keys.iter().map(Keypair::did).collect();
        let messages: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 40]).collect();
        let mut sigs: Vec<[u8; 64]> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let items = |sigs: &[[u8; 64]]| -> Vec<(Did, Vec<u8>, [u8; 64])> {
            (0..20)
                .map(|i| (dids[i], messages[i].clone(), sigs[i]))
                .collect()
        };
        let batch = |v: &[(Did, Vec<u8>, [u8; 64])]| {
            let items: Vec<SignedMessage<'_>> = v
                .iter()
                .map(|(did, message, signature)| SignedMessage {
                    did,
                    message,
                    signature,
                })
                .collect();
            verify_batch(&items)
        };
        let all = items(&sigs);
        assert!(batch(&all));
        for (did, m, s) in &all {
            assert_eq!(verify(did, m, s), Ok(()));
            // Honest signatures also pass ed25519-dalek's strict check.
            let sig = ed25519_dalek::Signature::from_bytes(s);
            assert!(did.key().expect("valid").verify_strict(m, &sig).is_ok());
        }
        // Any single flipped bit fails alone and fails the batch.
        for bit in [0usize, 100, 255, 256, 300, 511] {
            let mut bad = sigs.clone();
            bad[7][bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&dids[7], &messages[7], &bad[7]).is_err());
            assert!(!batch(&items(&bad)));
        }
        // A non-canonical s (s + l) fails.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sigs[3][32 + i]) + u16::from(l[i]) + carry;
            sigs[3][32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(verify(&dids[3], &messages[3], &sigs[3]).is_err());
        assert!(!batch(&items(&sigs)));
    }

    /// A signature whose R carries a small torsion component: refused by the
    /// cofactorless `verify_strict`, accepted by the cofactored rule, and
    /// accepted the same way alone and in a batch, so peers cannot disagree.
    #[test]
    fn a_torsion_signature_is_judged_the_same_alone_and_in_a_batch() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let key = Keypair::generate().expect("randomness");
        let did = key.did();
        let expanded = ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(
            &Sha512::digest(key.secret().as_slice()).into(),
        );
        assert_eq!(
            (ED25519_BASEPOINT_POINT * expanded.scalar)
                .compress()
                .to_bytes(),
            *did.as_bytes()
        );
        let message = b"torsion";
        let r = Scalar::from_bytes_mod_order([42; 32]);
        let big_r = ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[1];
        let r_bytes = big_r.compress().to_bytes();
        let hash = Sha512::new()
            .chain_update(r_bytes)
            .chain_update(did.as_bytes())
            .chain_update(message)
            .finalize();
        let k = Scalar::from_bytes_mod_order_wide(&hash.into());
        let s = r + k * expanded.scalar;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());

        let strict = did
            .key()
            .expect("valid")
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig));
        assert!(strict.is_err(), "the cofactorless check refuses it");
        assert_eq!(verify(&did, message, &sig), Ok(()));
        let honest = key.sign(b"honest");
        for _ in 0..32 {
            assert!(verify_batch(&[
                SignedMessage {
                    did: &did,
                    message,
                    signature: &sig
                },
                SignedMessage {
                    did: &did,
                    message: b"honest",
                    signature: &honest
                },
            ]));
        }
    }

    #[test]
    fn secret_roundtrips() {
        let alice = Keypair::generate().expect("randomness");
        let again = Keypair::from_secret(&alice.secret());
        assert_eq!(again.did(), alice.did());
    }
}
