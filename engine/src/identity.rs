//! Ed25519 identities: key pairs, signing, verification.

use ed25519_dalek::{Signature, SigningKey};
use icn_schemas::Did;
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

/// Verifies `signature` over `message` by `did`'s key. Strict verification:
/// non-canonical signatures are refused, so every peer agrees on every
/// signature.
pub fn verify(did: &Did, message: &[u8], signature: &[u8; 64]) -> Result<(), BadSignature> {
    did.key()
        .map_err(|_| BadSignature(*did))?
        .verify_strict(message, &Signature::from_bytes(signature))
        .map_err(|_| BadSignature(*did))
}

#[cfg(test)]
mod tests {
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
    fn secret_roundtrips() {
        let alice = Keypair::generate().expect("randomness");
        let again = Keypair::from_secret(&alice.secret());
        assert_eq!(again.did(), alice.did());
    }
}
