//! Connection authentication, shared by every transport: a connection belongs to the
//! peer whose `endpoint_info` was passed to `connect()`, proved in both directions.
//!
//! # The mechanism
//!
//! Each identity (a TCP context, a shared-memory endpoint) holds a
//! random X25519 key pair made at creation. The public half is published in
//! `endpoint_info` as `"auth_key"` (64 hex digits); the secret half never leaves the
//! process. Two identities that know each other's public keys share a *pair key*:
//! `HMAC-SHA256(X25519(my secret, peer public), "dlslime pair key v1" | both public keys,
//! sorted)`: the same on both sides, and computable by nobody else.
//!
//! A connection is authenticated by a three-message challenge–response with fresh
//! 32-byte nonces from both sides, so nothing can be replayed:
//!
//! ```text
//! dialer   -> acceptor   Challenge { dialer key, dialer nonce }                 64 bytes
//! acceptor -> dialer     Response  { acceptor key, acceptor nonce, tag_A }      96 bytes
//! dialer   -> acceptor   Proof     { tag_D }                                    32 bytes
//! tag_R = HMAC-SHA256(pair key, "dlslime auth v1" | transport label | role R |
//!                     dialer key | acceptor key | dialer nonce | acceptor nonce | bind)
//! ```
//!
//! The dialer knows which key the acceptor must hold (from the peer's `endpoint_info`):
//! a wrong acceptor cannot produce `tag_A`. The acceptor learns the dialer's claimed key
//! from the challenge and checks `tag_D` against it, so once [`Acceptor::check_proof`]
//! returns, the connection is *authenticated as that key*; it does not need to know the
//! dialer in advance. Deciding what that key may do (the target endpoint must be
//! connected to exactly that key) is the transport's job, per operation.
//!
//! `bind` is whatever else the transport wants both sides to have seen identically (for
//! TCP, the two plain hello prefixes with versions and context ids).
//!
//! # How a transport uses it
//!
//! * Make an [`Identity`] per authenticated unit; publish [`Identity::public`] with
//!   [`PublicKey::to_hex`] under [`INFO_FIELD`]; read the peer's with
//!   [`PublicKey::from_info`] in `connect()`.
//! * **Byte streams (TCP, the shm Unix socket).** Dialer: [`Dialer::new`] with the peer's
//!   key, send [`Dialer::challenge`], read a [`Response`], [`Dialer::check_response`]
//!   gives the [`Proof`] to send. Acceptor: read a [`Challenge`], [`Acceptor::respond`],
//!   send the [`Response`], read the [`Proof`], [`Acceptor::check_proof`] gives the
//!   dialer's key. The acceptor must bound the whole exchange by a deadline.
//! * **RDMA** does not use this module: there is no handshake on a byte stream to
//!   authenticate, and authenticating the first messages on a QP would not protect the
//!   packets after them (nothing in RoCE or InfiniBand carries a MAC). Its trust model is
//!   the fabric's; `docs/security.md` says what that does and does not stop.
//!
//! # Trust model
//!
//! `endpoint_info` is public: reading it (from Redis, NanoCtrl, a log) gives the public
//! key only, and does not let anyone connect as either side. *Changing* it in transit
//! does: whoever can replace the key in a peer's info before `connect()` is the peer
//! (for PeerAgent, the Redis and NanoCtrl credentials protect that). The handshake
//! authenticates the two ends of a connection; the frames that follow are neither
//! encrypted nor MACed, so an attacker who can hijack an established TCP connection on
//! the path (not merely send packets to the port) is out of scope: use a private network
//! or an encrypted tunnel between hosts you do not trust the wire of.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result, Status};

/// The `endpoint_info` field that carries the public key.
pub const INFO_FIELD: &str = "auth_key";
pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 32;
pub const TAG_LEN: usize = 32;
pub const CHALLENGE_LEN: usize = KEY_LEN + NONCE_LEN;
pub const RESPONSE_LEN: usize = KEY_LEN + NONCE_LEN + TAG_LEN;
pub const PROOF_LEN: usize = TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A public key: who a connection is authenticated as.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}…)", &self.to_hex()[..12])
    }
}

/// Lower-case hex of `b` (how keys and handshake messages travel in JSON).
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from hex.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut k = [0u8; N];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(k)
}

impl PublicKey {
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<PublicKey> {
        from_hex(s).map(PublicKey)
    }

    /// The peer's key from its `endpoint_info`.
    pub fn from_info(info: &Map<String, Value>) -> Result<PublicKey> {
        let s = info
            .get(INFO_FIELD)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::new(
                    Status::InvalidEndpointInfo,
                    format!("endpoint info lacks {INFO_FIELD:?} (a peer of an older version?)"),
                )
            })?;
        PublicKey::from_hex(s).ok_or_else(|| {
            Error::new(
                Status::InvalidEndpointInfo,
                format!("{INFO_FIELD:?} is not {} hex digits", 2 * KEY_LEN),
            )
        })
    }
}

/// A key pair; the secret half never leaves this struct.
pub struct Identity {
    secret: StaticSecret,
    public: PublicKey,
}

impl Default for Identity {
    fn default() -> Self {
        Identity::generate()
    }
}

impl Identity {
    pub fn generate() -> Identity {
        let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let public = PublicKey(XPublic::from(&secret).to_bytes());
        Identity { secret, public }
    }

    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The key shared with the holder of `peer`'s secret, and with nobody else.
    pub fn pair_key(&self, peer: &PublicKey) -> Result<PairKey> {
        let shared = self.secret.diffie_hellman(&XPublic::from(peer.0));
        if !shared.was_contributory() {
            return Err(Error::new(
                Status::RemoteAccess,
                "peer presented a degenerate public key",
            ));
        }
        let (lo, hi) = if self.public.0 <= peer.0 {
            (&self.public.0, &peer.0)
        } else {
            (&peer.0, &self.public.0)
        };
        let mut m = HmacSha256::new_from_slice(shared.as_bytes()).expect("any key length");
        m.update(b"dlslime pair key v1");
        m.update(lo);
        m.update(hi);
        Ok(PairKey(Zeroizing::new(m.finalize().into_bytes().into())))
    }
}

/// The symmetric key two identities share (wiped on drop).
pub struct PairKey(Zeroizing<[u8; 32]>);

#[derive(Clone, Copy)]
enum Role {
    Dialer = b'D' as isize,
    Acceptor = b'A' as isize,
}

/// What both tags cover besides the role.
struct Transcript<'a> {
    label: &'a str,
    dialer: &'a PublicKey,
    acceptor: &'a PublicKey,
    dialer_nonce: &'a [u8; NONCE_LEN],
    acceptor_nonce: &'a [u8; NONCE_LEN],
    bind: &'a [u8],
}

impl PairKey {
    fn mac(&self, role: Role, t: &Transcript<'_>) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0[..]).expect("any key length");
        m.update(b"dlslime auth v1");
        m.update(&(t.label.len() as u32).to_le_bytes());
        m.update(t.label.as_bytes());
        m.update(&[role as u8]);
        m.update(&t.dialer.0);
        m.update(&t.acceptor.0);
        m.update(t.dialer_nonce);
        m.update(t.acceptor_nonce);
        m.update(&(t.bind.len() as u32).to_le_bytes());
        m.update(t.bind);
        m
    }

    fn tag(&self, role: Role, t: &Transcript<'_>) -> [u8; TAG_LEN] {
        self.mac(role, t).finalize().into_bytes().into()
    }

    /// Constant-time comparison.
    fn verify(&self, role: Role, t: &Transcript<'_>, tag: &[u8; TAG_LEN]) -> bool {
        self.mac(role, t).verify_slice(tag).is_ok()
    }
}

fn nonce() -> [u8; NONCE_LEN] {
    use rand::RngCore;
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

fn split<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N]
        .try_into()
        .expect("length checked by the caller")
}

/// Message 1, dialer to acceptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub key: PublicKey,
    pub nonce: [u8; NONCE_LEN],
}

impl Challenge {
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut b = [0u8; CHALLENGE_LEN];
        b[..KEY_LEN].copy_from_slice(&self.key.0);
        b[KEY_LEN..].copy_from_slice(&self.nonce);
        b
    }

    pub fn decode(b: &[u8; CHALLENGE_LEN]) -> Challenge {
        Challenge {
            key: PublicKey(split(b, 0)),
            nonce: split(b, KEY_LEN),
        }
    }
}

/// Message 2, acceptor to dialer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub key: PublicKey,
    pub nonce: [u8; NONCE_LEN],
    pub tag: [u8; TAG_LEN],
}

impl Response {
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[..KEY_LEN].copy_from_slice(&self.key.0);
        b[KEY_LEN..KEY_LEN + NONCE_LEN].copy_from_slice(&self.nonce);
        b[KEY_LEN + NONCE_LEN..].copy_from_slice(&self.tag);
        b
    }

    pub fn decode(b: &[u8; RESPONSE_LEN]) -> Response {
        Response {
            key: PublicKey(split(b, 0)),
            nonce: split(b, KEY_LEN),
            tag: split(b, KEY_LEN + NONCE_LEN),
        }
    }
}

/// Message 3, dialer to acceptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    pub tag: [u8; TAG_LEN],
}

impl Proof {
    pub fn encode(&self) -> [u8; PROOF_LEN] {
        self.tag
    }

    pub fn decode(b: &[u8; PROOF_LEN]) -> Proof {
        Proof { tag: *b }
    }
}

/// The dialing side of one handshake.
pub struct Dialer {
    pair: PairKey,
    me: PublicKey,
    peer: PublicKey,
    nonce: [u8; NONCE_LEN],
    label: &'static str,
}

impl Dialer {
    /// `peer`: the key from the peer's `endpoint_info`; `label`: the transport.
    pub fn new(id: &Identity, peer: &PublicKey, label: &'static str) -> Result<Dialer> {
        Ok(Dialer {
            pair: id.pair_key(peer)?,
            me: id.public(),
            peer: *peer,
            nonce: nonce(),
            label,
        })
    }

    pub fn challenge(&self) -> Challenge {
        Challenge {
            key: self.me,
            nonce: self.nonce,
        }
    }

    /// Checks that the acceptor holds the expected key; returns the proof to send.
    pub fn check_response(&self, r: &Response, bind: &[u8]) -> Result<Proof> {
        let t = Transcript {
            label: self.label,
            dialer: &self.me,
            acceptor: &self.peer,
            dialer_nonce: &self.nonce,
            acceptor_nonce: &r.nonce,
            bind,
        };
        if r.key != self.peer || !self.pair.verify(Role::Acceptor, &t, &r.tag) {
            return Err(Error::new(
                Status::RemoteAccess,
                "the peer failed authentication: it does not hold the key of the endpoint_info connect() was given",
            ));
        }
        Ok(Proof {
            tag: self.pair.tag(Role::Dialer, &t),
        })
    }
}

/// The accepting side of one handshake, between its response and the dialer's proof.
pub struct Acceptor {
    pair: PairKey,
    me: PublicKey,
    dialer: PublicKey,
    dialer_nonce: [u8; NONCE_LEN],
    nonce: [u8; NONCE_LEN],
    label: &'static str,
}

impl Acceptor {
    /// Answers a challenge (proving our key); the dialer is not trusted yet.
    pub fn respond(
        id: &Identity,
        c: &Challenge,
        label: &'static str,
        bind: &[u8],
    ) -> Result<(Acceptor, Response)> {
        let a = Acceptor {
            pair: id.pair_key(&c.key)?,
            me: id.public(),
            dialer: c.key,
            dialer_nonce: c.nonce,
            nonce: nonce(),
            label,
        };
        let tag = a.pair.tag(Role::Acceptor, &a.transcript(bind));
        let r = Response {
            key: a.me,
            nonce: a.nonce,
            tag,
        };
        Ok((a, r))
    }

    fn transcript<'a>(&'a self, bind: &'a [u8]) -> Transcript<'a> {
        Transcript {
            label: self.label,
            dialer: &self.dialer,
            acceptor: &self.me,
            dialer_nonce: &self.dialer_nonce,
            acceptor_nonce: &self.nonce,
            bind,
        }
    }

    /// The key the connection is authenticated as, if the proof holds.
    pub fn check_proof(&self, p: &Proof, bind: &[u8]) -> Result<PublicKey> {
        if self
            .pair
            .verify(Role::Dialer, &self.transcript(bind), &p.tag)
        {
            Ok(self.dialer)
        } else {
            Err(Error::new(
                Status::RemoteAccess,
                "the dialer failed authentication (it does not hold the secret of the key it claimed)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d_id: &Identity, expect: &PublicKey, a_id: &Identity) -> Result<PublicKey> {
        let d = Dialer::new(d_id, expect, "test")?;
        let (a, r) = Acceptor::respond(
            a_id,
            &Challenge::decode(&d.challenge().encode()),
            "test",
            b"x",
        )?;
        let p = d.check_response(&Response::decode(&r.encode()), b"x")?;
        a.check_proof(&Proof::decode(&p.encode()), b"x")
    }

    #[test]
    fn honest_pair_authenticates_both_ways() {
        let (x, y) = (Identity::generate(), Identity::generate());
        assert_eq!(run(&x, &y.public(), &y).unwrap(), x.public());
        assert_eq!(
            x.pair_key(&y.public()).unwrap().0[..],
            y.pair_key(&x.public()).unwrap().0[..]
        );
    }

    #[test]
    fn impostors_fail() {
        let (x, y, z) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        // an acceptor that is not the expected peer
        assert_eq!(
            run(&x, &y.public(), &z).unwrap_err().status(),
            Status::RemoteAccess
        );
        // a dialer claiming x's key without x's secret: it can only guess tag_D
        let d = Dialer::new(&z, &y.public(), "test").unwrap();
        let mut c = d.challenge();
        c.key = x.public();
        let (a, _) = Acceptor::respond(&y, &c, "test", b"").unwrap();
        let forged = Proof {
            tag: [7u8; TAG_LEN],
        };
        assert!(a.check_proof(&forged, b"").is_err());
        // a replayed proof from an earlier handshake does not fit the new nonce
        let d = Dialer::new(&x, &y.public(), "test").unwrap();
        let (a1, r1) = Acceptor::respond(&y, &d.challenge(), "test", b"").unwrap();
        let p1 = d.check_response(&r1, b"").unwrap();
        assert!(a1.check_proof(&p1, b"").is_ok());
        let (a2, _) = Acceptor::respond(&y, &d.challenge(), "test", b"").unwrap();
        assert!(a2.check_proof(&p1, b"").is_err());
        // different bound bytes or labels fail
        let d = Dialer::new(&x, &y.public(), "tcp").unwrap();
        let (_, r) = Acceptor::respond(&y, &d.challenge(), "shm", b"").unwrap();
        assert!(d.check_response(&r, b"").is_err());
        // a degenerate (low-order) key is refused
        assert!(x.pair_key(&PublicKey([0u8; KEY_LEN])).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let k = Identity::generate().public();
        assert_eq!(PublicKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(PublicKey::from_hex("zz"), None);
        assert_eq!(PublicKey::from_hex(&"g".repeat(64)), None);
    }
}
