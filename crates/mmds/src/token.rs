//! MMDS V2 session tokens.
//!
//! A token is `base64(expiry_ms ‖ serial ‖ tag)` (8 + 8 + 16 bytes, 44 characters) where
//! `expiry_ms` is the token clock's time at which it stops being valid and `tag` is
//! HMAC-SHA256 (truncated to 128 bits) under a 256-bit per-instance random key, over a domain
//! label, the AAD (`microvmid=<id>`, as Firecracker) and the first 16 bytes. Validation is a
//! length check, a base64 decode, a constant-time tag comparison (`Mac::verify_truncated_left`)
//! and `expiry_ms > now`.
//!
//! Why HMAC-SHA256 (`hmac` + `sha2`, RustCrypto) rather than Firecracker's AES-256-GCM: a token
//! needs integrity and an unforgeable binding to its expiry, not secrecy (the guest chose the TTL
//! and knows roughly when it asked). A MAC gives exactly that, has no nonce-reuse failure mode
//! (Firecracker must re-key after 2^32 tokens; this never needs to), is pure Rust (aws-lc-rs
//! needs a C toolchain) and its verification is constant time.
//!
//! The key, the AAD and the serial counter are [`TokenAuthorityState`], saved into a snapshot and
//! restored so tokens issued before a snapshot stay valid after it (Firecracker loses them).
//! Expiry is measured on the injected [`Clock`]; the default [`SystemClock`] is wall-clock time,
//! which keeps its meaning in the restored process.
//!
//! Single-threaded: the authority lives inside [`crate::Mmds`], behind its mutex.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::{Clock, SystemClock};

/// Minimum token lifetime in seconds.
pub const MIN_TOKEN_TTL_SECONDS: u32 = 1;
/// Maximum token lifetime in seconds (6 hours).
pub const MAX_TOKEN_TTL_SECONDS: u32 = 21600;
/// The path a guest `PUT`s to for a token.
pub const PATH_TO_TOKEN: &str = "/latest/api/token";
/// Longer tokens are rejected before decoding (Firecracker's bound).
const TOKEN_LENGTH_LIMIT: usize = 70;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = 8 + 8 + TAG_LEN;
const DOMAIN: &[u8] = b"squib-mmds-token-v1";

type HmacSha256 = Hmac<Sha256>;

/// Token errors (Firecracker's `MmdsTokenError` texts where it has them).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The OS random source failed.
    #[error("Failed to generate a key")]
    KeyGeneration,
    /// TTL out of 1..=21600.
    #[error(
        "Invalid time to live value provided for token: {0}. Please provide a value between {MIN_TOKEN_TTL_SECONDS} and {MAX_TOKEN_TTL_SECONDS}."
    )]
    InvalidTtlValue(u32),
    /// A restored state is malformed.
    #[error("Invalid token authority state: {0}")]
    InvalidState(&'static str),
}

/// The snapshot-persistent part of a [`TokenAuthority`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAuthorityState {
    /// The 32-byte MAC key.
    pub key: Vec<u8>,
    /// The additional authenticated data (`microvmid=<id>`, or empty).
    pub aad: String,
    /// Tokens issued so far (the next token's serial).
    pub issued: u64,
}

impl fmt::Debug for TokenAuthorityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthorityState")
            .field("key", &"<redacted>")
            .field("aad", &self.aad)
            .field("issued", &self.issued)
            .finish()
    }
}

/// Issues and validates session tokens.
pub struct TokenAuthority {
    key: [u8; KEY_LEN],
    aad: String,
    issued: u64,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("aad", &self.aad)
            .field("issued", &self.issued)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// A fresh authority with a random key on the wall clock.
    pub fn new() -> Result<Self, TokenError> {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A fresh authority with a random key on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Result<Self, TokenError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|_| TokenError::KeyGeneration)?;
        Ok(Self {
            key,
            aad: String::new(),
            issued: 0,
            clock,
        })
    }

    /// Replaces the clock.
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Binds tokens to the microVM id.
    pub fn set_aad(&mut self, instance_id: &str) {
        self.aad = format!("microvmid={instance_id}");
    }

    /// The persistent state.
    pub fn save(&self) -> TokenAuthorityState {
        TokenAuthorityState {
            key: self.key.to_vec(),
            aad: self.aad.clone(),
            issued: self.issued,
        }
    }

    /// Replaces key, AAD and serial with a saved state (the clock is kept).
    pub fn restore(&mut self, state: &TokenAuthorityState) -> Result<(), TokenError> {
        self.key = state
            .key
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::InvalidState("the key must be 32 bytes"))?;
        self.aad.clone_from(&state.aad);
        self.issued = state.issued;
        Ok(())
    }

    /// Issues a token valid for `ttl_seconds` from now.
    pub fn generate_token(&mut self, ttl_seconds: u32) -> Result<String, TokenError> {
        if !(MIN_TOKEN_TTL_SECONDS..=MAX_TOKEN_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(TokenError::InvalidTtlValue(ttl_seconds));
        }
        let expiry = self
            .clock
            .now_ms()
            .saturating_add(u64::from(ttl_seconds) * 1000);
        let mut token = [0u8; TOKEN_LEN];
        token[..8].copy_from_slice(&expiry.to_le_bytes());
        token[8..16].copy_from_slice(&self.issued.to_le_bytes());
        self.issued = self.issued.wrapping_add(1);
        let tag = self.mac(&token[..16]).finalize().into_bytes();
        token[16..].copy_from_slice(&tag[..TAG_LEN]);
        Ok(STANDARD.encode(token))
    }

    /// Whether `token` was issued under this key and AAD and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        if token.len() > TOKEN_LENGTH_LIMIT {
            return false;
        }
        let Ok(bytes) = STANDARD.decode(token) else {
            return false;
        };
        let Ok(bytes) = <[u8; TOKEN_LEN]>::try_from(bytes.as_slice()) else {
            return false;
        };
        if self
            .mac(&bytes[..16])
            .verify_truncated_left(&bytes[16..])
            .is_err()
        {
            return false;
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(expiry) > self.clock.now_ms()
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail; the fallback (an all-zero
        // block-size key, making every token invalid) exists only to avoid a panic path.
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| {
            <HmacSha256 as hmac::digest::KeyInit>::new(
                &hmac::digest::generic_array::GenericArray::default(),
            )
        });
        mac.update(DOMAIN);
        mac.update(
            &u32::try_from(self.aad.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        mac.update(self.aad.as_bytes());
        mac.update(body);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn authority(clock: &ManualClock) -> TokenAuthority {
        TokenAuthority::with_clock(Arc::new(clock.clone())).unwrap()
    }

    #[test]
    fn ttl_bounds() {
        let clock = ManualClock::new(1000);
        let mut a = authority(&clock);
        assert_eq!(a.generate_token(0), Err(TokenError::InvalidTtlValue(0)));
        assert_eq!(
            a.generate_token(21601),
            Err(TokenError::InvalidTtlValue(21601))
        );
        assert_eq!(
            TokenError::InvalidTtlValue(0).to_string(),
            "Invalid time to live value provided for token: 0. Please provide a value between 1 and 21600."
        );
        assert!(a.generate_token(1).is_ok());
        assert!(a.generate_token(21600).is_ok());
    }

    #[test]
    fn expiry_with_fake_clock() {
        let clock = ManualClock::new(5_000);
        let mut a = authority(&clock);
        let t = a.generate_token(2).unwrap();
        assert!(t.len() <= TOKEN_LENGTH_LIMIT);
        assert!(a.is_valid(&t));
        clock.advance(1_999);
        assert!(a.is_valid(&t));
        clock.advance(1);
        assert!(!a.is_valid(&t));
    }

    #[test]
    fn forged_and_foreign_tokens_rejected() {
        let clock = ManualClock::new(0);
        let mut a = authority(&clock);
        let b = authority(&clock);
        let t = a.generate_token(60).unwrap();
        assert!(!b.is_valid(&t), "another key");
        let mut bytes = STANDARD.decode(&t).unwrap();
        bytes[0] ^= 1; // extend the expiry
        assert!(!a.is_valid(&STANDARD.encode(&bytes)));
        assert!(!a.is_valid(""));
        assert!(!a.is_valid("not base64!"));
        assert!(!a.is_valid(&"A".repeat(71)));
        assert!(!a.is_valid(&STANDARD.encode([0u8; 32])));
        // Another microVM id.
        a.set_aad("vm1");
        let t1 = a.generate_token(60).unwrap();
        assert!(a.is_valid(&t1));
        a.set_aad("vm2");
        assert!(!a.is_valid(&t1));
    }

    #[test]
    fn state_survives_restore() {
        let clock = ManualClock::new(100);
        let mut a = authority(&clock);
        a.set_aad("id");
        let t = a.generate_token(60).unwrap();
        let state = a.save();
        let json = serde_json::to_string(&state).unwrap();
        let restored: TokenAuthorityState = serde_json::from_str(&json).unwrap();
        let mut b = authority(&clock);
        assert!(!b.is_valid(&t));
        b.restore(&restored).unwrap();
        assert!(b.is_valid(&t));
        assert_ne!(b.generate_token(60).unwrap(), t);
        let bad = TokenAuthorityState {
            key: vec![1, 2],
            aad: String::new(),
            issued: 0,
        };
        assert!(b.restore(&bad).is_err());
        assert!(!format!("{state:?}").contains(&format!("{:?}", state.key)));
    }
}
