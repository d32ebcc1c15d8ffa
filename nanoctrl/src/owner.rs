//! Owner tokens: who may act on a registered agent.
//!
//! Without them anyone who can reach NanoCtrl could `/cleanup` a live agent and
//! register its alias again, and every client that looked the alias up afterwards would
//! talk to the impostor. An agent that registers with an owner token (its own,
//! `owner_token`, or one NanoCtrl generates, `owned: true`) gets it back in the reply;
//! NanoCtrl keeps only its SHA-256 (`owner` in the agent hash). While the agent is live
//! (`scripts/owner.lua`: heartbeats within three periods and a second), registering the
//! alias again, heartbeats, `/cleanup`, `/v1/desired_topology` and `/register_mr` for
//! it need the token (403 otherwise; 409 for the registration, as for any taken
//! alias). Once its heartbeats stop, anyone may clean it up or take the alias over, as
//! before. Agents registered without a token (the original's clients) keep the
//! original's rules.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// What the scripts compare: hex SHA-256 of the token, or "" for none.
pub fn hash(token: Option<&str>) -> String {
    let Some(t) = token else {
        return String::new();
    };
    hex(&Sha256::digest(t.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token: 32 random bytes, hex.
pub fn generate() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex(&b)
}

/// The reply to an owner check that failed.
pub fn refused(agent: &str) -> crate::error::AppError {
    crate::error::AppError::Forbidden(format!(
        "agent '{agent}' is owned by a live agent; this needs its owner token"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_tokens() {
        assert_eq!(hash(None), "");
        assert_eq!(
            hash(Some("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
