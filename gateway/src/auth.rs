//! Authentication: challenge → signed delegation → JWT.
//!
//! `POST /v1/auth/challenge {did}` answers a challenge that is a delegation
//! statement (`icn_schemas::delegation`) naming the member, this node, the
//! scopes, a validity and a nonce. The client signs the exact challenge
//! string with its DID key; `POST /v1/auth/verify` checks the signature,
//! stores the signed statement durably and answers a JWT (HS256) that names
//! it. Every write made for that token carries the statement, so every peer
//! can check it without trusting this node.
//!
//! The nonce is 16 random hex digits followed by 32 hex digits of an HMAC
//! (under the JWT secret) of the rest of the statement: the node can tell
//! its own challenges without keeping them, and they survive a restart. A
//! challenge is answered within [`CHALLENGE_SECONDS`], once.

use std::num::NonZeroU32;

use governor::clock::Clock as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use icn_schemas::{Delegation, Did, Scope, SignedDelegation};
use sha2::Sha256;

use crate::error::AppError;

type HmacSha256 = Hmac<Sha256>;

/// How long a challenge may wait for its signature.
pub const CHALLENGE_SECONDS: u64 = 300;

/// The claims of the gateway's JWTs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The member's DID.
    pub sub: String,
    /// The node that issued it.
    pub iss: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds: the delegation's `expires`.
    pub exp: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The delegation's hash, hex: which signed statement writes carry.
    pub jti: String,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` as an RFC 3339 UTC time, `2026-11-22T03:04:05Z`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Issues challenges and tokens with one secret.
pub struct Authority {
    secret: Vec<u8>,
    node: Did,
    token_seconds: u64,
}

/// A decoded, checked token.
#[derive(Debug, Clone)]
pub struct Token {
    /// The claims.
    pub claims: Claims,
    /// The member.
    pub did: Did,
    /// The delegation's hash.
    pub delegation: [u8; 32],
}

impl Authority {
    /// An authority for `node`, signing tokens with `secret`, issuing
    /// delegations valid for `token_seconds`.
    pub fn new(secret: Vec<u8>, node: Did, token_seconds: u64) -> Self {
        Authority {
            secret,
            node,
            token_seconds,
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        #[allow(clippy::expect_used)]
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A fresh challenge for `member` with `scopes`, at `now`, to be signed
    /// by `device` (one of the member's devices) or, without one, by the
    /// member's DID key.
    pub fn challenge(
        &self,
        member: Did,
        device: Option<Did>,
        scopes: Vec<Scope>,
        now: u64,
    ) -> Result<String, AppError> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(AppError::internal)?;
        let mut delegation = Delegation {
            member,
            device,
            node: self.node,
            scopes,
            not_before: now,
            expires: now + self.token_seconds,
            nonce: String::new(),
        };
        let random = hex::encode(random);
        let tag = self.nonce_tag(&delegation, &random);
        delegation.nonce = format!("{random}{tag}");
        Ok(delegation.statement())
    }

    fn nonce_tag(&self, d: &Delegation, random: &str) -> String {
        let scopes: Vec<&str> = d.scopes.iter().map(|s| s.as_str()).collect();
        let device = d.device.map(|d| d.to_string()).unwrap_or_default();
        let mac = self.mac(&[
            b"icn-gateway/challenge/v1",
            d.member.to_string().as_bytes(),
            device.as_bytes(),
            d.node.to_string().as_bytes(),
            scopes.join(" ").as_bytes(),
            &d.not_before.to_be_bytes(),
            &d.expires.to_be_bytes(),
            random.as_bytes(),
        ]);
        hex::encode(&mac[..16])
    }

    /// Checks a signed challenge for `did` at `now`; returns the signed
    /// delegation it makes.
    pub fn verify_challenge(
        &self,
        did: &Did,
        challenge: &str,
        signature: &str,
        now: u64,
    ) -> Result<(Delegation, SignedDelegation), AppError> {
        let delegation: Delegation = challenge
            .parse()
            .map_err(|e| AppError::bad_request(format!("not a challenge of this gateway: {e}")))?;
        if delegation.member != *did {
            return Err(AppError::bad_request(
                "the challenge was issued for another DID",
            ));
        }
        let ours = delegation.node == self.node
            && delegation.nonce.len() == 48
            && delegation.expires == delegation.not_before + self.token_seconds
            && {
                let (random, tag) = delegation.nonce.split_at(16);
                constant_time_eq(
                    self.nonce_tag(&delegation, random).as_bytes(),
                    tag.as_bytes(),
                )
            };
        if !ours {
            return Err(AppError::unauthorized(
                "this challenge was not issued by this gateway; request one at POST /v1/auth/challenge",
            ));
        }
        if now >= delegation.not_before + CHALLENGE_SECONDS || now < delegation.not_before {
            return Err(AppError::unauthorized(
                "the challenge has expired; request a new one",
            ));
        }
        let signature = decode_signature(signature)?;
        let signed = SignedDelegation {
            statement: challenge.to_owned(),
            signature,
        };
        signed.verify().map_err(|_| {
            AppError::unauthorized(format!(
                "the signature is not {did}'s signature of the challenge"
            ))
        })?;
        Ok((delegation, signed))
    }

    /// A JWT for `delegation`, whose stored hash is `hash`.
    pub fn token(&self, delegation: &Delegation, hash: &[u8; 32], now: u64) -> String {
        let scopes: Vec<&str> = delegation.scopes.iter().map(|s| s.as_str()).collect();
        self.encode(&Claims {
            sub: delegation.member.to_string(),
            iss: self.node.to_string(),
            iat: now,
            exp: delegation.expires,
            scope: scopes.join(" "),
            jti: hex::encode(hash),
        })
    }

    /// The JWT of `claims`: the only text [`Authority::check_token`]
    /// accepts for them.
    pub fn encode(&self, claims: &Claims) -> String {
        // HS256 over serde-serialisable claims, with any secret, cannot
        // fail to sign.
        jsonwebtoken::EncodingKey::from_secret(&self.secret)
            .and_then(|key| {
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    claims,
                    &key,
                )
            })
            .unwrap_or_default()
    }

    /// Checks a JWT's signature (HS256 only) and its expiry at `now`.
    pub fn check_token(&self, token: &str, now: u64) -> Result<Token, AppError> {
        let bad =
            || AppError::unauthorized("invalid token; authenticate again (§4 of the runbook)");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        // Expiry is judged below against `now`, the caller's clock, so
        // that it says which of the two went wrong.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        let key = jsonwebtoken::DecodingKey::from_secret(&self.secret).map_err(|_| bad())?;
        let claims = jsonwebtoken::decode::<Claims>(token.as_bytes(), &key, &validation)
            .map_err(|_| bad())?
            .claims;
        if now >= claims.exp {
            return Err(AppError::unauthorized(
                "the token has expired; authenticate again",
            ));
        }
        let did = Did::parse_valid(&claims.sub).map_err(|_| bad())?;
        let delegation = hex::decode(&claims.jti)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or_else(bad)?;
        Ok(Token {
            claims,
            did,
            delegation,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signature as the runbook sends it: base64 (standard or URL-safe,
/// padded or not) or hex.
pub fn decode_signature(text: &str) -> Result<[u8; 64], AppError> {
    let text = text.trim();
    let bytes = if text.len() == 128 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
    };
    bytes
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| AppError::bad_request("the signature must be 64 bytes in base64 or hex"))
}

/// The hash a delegation is stored under.
pub fn delegation_hash(signed: &SignedDelegation) -> [u8; 32] {
    signed.hash()
}

/// Rate limits per key (a DID, or an IP address for the routes before
/// authentication): `burst` requests at once, `per_second` after. The
/// accounting is `governor`'s (GCRA, one cell per key); this type adds the
/// refusal the 429 states and bounds the keys it remembers.
pub struct RateLimiter<K: std::hash::Hash + Eq + Clone = Did> {
    limiter: governor::DefaultKeyedRateLimiter<K>,
    /// The limits as configured, for the refusal to state.
    limits: (u32, u32),
}

/// Keys remembered before those whose cells are full again are dropped.
const MAX_BUCKETS: usize = 100_000;

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter; a zero `burst` or `per_second` counts as one.
    pub fn new(burst: u32, per_second: u32) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        RateLimiter {
            limiter: governor::RateLimiter::keyed(
                governor::Quota::per_second(per_second).allow_burst(burst),
            ),
            limits: (burst.get(), per_second.get()),
        }
    }

    /// Takes one request's worth for `key`; refused, with how long to
    /// wait, when the key has used its allowance.
    pub fn take(&self, key: &K) -> Result<(), Limited> {
        if self.limiter.len() >= MAX_BUCKETS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            Limited {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                burst: self.limits.0,
                per_second: self.limits.1,
            }
        })
    }
}

/// A request a [`RateLimiter`] refused: when to retry, and the limits it
/// enforces, which the 429 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until a request would pass.
    pub retry_after: u64,
    /// Requests allowed at once.
    pub burst: u32,
    /// Requests allowed per second after the burst.
    pub per_second: u32,
}

/// Parses a space- or comma-separated scope list; all scopes when empty.
pub fn parse_scopes(requested: &[String]) -> Result<Vec<Scope>, AppError> {
    if requested.is_empty() {
        return Ok(Scope::ALL.to_vec());
    }
    let mut scopes = requested
        .iter()
        .flat_map(|s| s.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Scope>()
                .map_err(|e| AppError::bad_request(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(AppError::bad_request("no scopes requested"));
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use icn_engine::test_utils::keypair;

    fn authority() -> Authority {
        Authority::new(b"secret".to_vec(), keypair(9).did(), 3600)
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_316_645), "2026-11-22T03:04:05Z");
    }

    #[test]
    fn a_signed_challenge_verifies_once_and_only_as_issued() {
        let a = authority();
        let member = keypair(1);
        let challenge = a
            .challenge(member.did(), None, Scope::ALL.to_vec(), 1000)
            .expect("challenge");
        let sig = member.sign(challenge.as_bytes());
        for encoded in [
            STANDARD.encode(sig),
            STANDARD_NO_PAD.encode(sig),
            hex::encode(sig),
        ] {
            let (d, _) = a
                .verify_challenge(&member.did(), &challenge, &encoded, 1010)
                .expect("verifies");
            assert_eq!(d.member, member.did());
        }
        let late = a.verify_challenge(
            &member.did(),
            &challenge,
            &hex::encode(sig),
            1000 + CHALLENGE_SECONDS,
        );
        assert_eq!(late.map(|_| ()).map_err(|e| e.status().as_u16()), Err(401));
        // A statement the member wrote itself, not issued here.
        let forged = challenge.replace("expires: 4600", "expires: 9999");
        let sig = member.sign(forged.as_bytes());
        let err = a
            .verify_challenge(&member.did(), &forged, &hex::encode(sig), 1010)
            .map(|_| ());
        assert_eq!(err.map_err(|e| e.status().as_u16()), Err(401));
        // Someone else's signature.
        let other = keypair(2).sign(challenge.as_bytes());
        let err = a
            .verify_challenge(&member.did(), &challenge, &hex::encode(other), 1010)
            .map(|_| ());
        assert_eq!(err.map_err(|e| e.status().as_u16()), Err(401));
    }

    #[test]
    fn tokens_check_signature_and_expiry() {
        let a = authority();
        let member = keypair(1);
        let challenge = a
            .challenge(member.did(), None, vec![Scope::GovRead], 1000)
            .expect("challenge");
        let sig = hex::encode(member.sign(challenge.as_bytes()));
        let (d, signed) = a
            .verify_challenge(&member.did(), &challenge, &sig, 1001)
            .expect("verifies");
        let token = a.token(&d, &delegation_hash(&signed), 1001);
        let checked = a.check_token(&token, 2000).expect("valid");
        assert_eq!(checked.did, member.did());
        assert_eq!(checked.claims.scope, "gov:read");
        assert!(a.check_token(&token, 4600).is_err(), "expired");
        let other = Authority::new(b"other".to_vec(), keypair(9).did(), 3600);
        assert!(other.check_token(&token, 2000).is_err(), "another secret");
        let mut tampered: Vec<&str> = token.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                scope: "gov:read gov:write".into(),
                ..checked.claims.clone()
            })
            .expect("json"),
        );
        tampered[1] = &payload;
        assert!(
            a.check_token(&tampered.join("."), 2000).is_err(),
            "tampered"
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            tampered[1]
        );
        assert!(a.check_token(&none, 2000).is_err(), "alg none");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_its_rate() {
        let limiter = RateLimiter::new(100, 10);
        let did = keypair(1).did();
        for _ in 0..100 {
            assert!(limiter.take(&did).is_ok());
        }
        let refused = limiter.take(&did).expect_err("over the burst");
        assert_eq!(refused.retry_after, 1);
        assert_eq!((refused.burst, refused.per_second), (100, 10));
        assert!(limiter.take(&keypair(2).did()).is_ok(), "per DID");
    }
}
