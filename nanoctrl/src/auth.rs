//! The bearer token: when NanoCtrl is started with `--token` (or `NANOCTRL_TOKEN`,
//! `--token-file`), every route, the health checks included, requires
//! `Authorization: Bearer <token>`, and anything else gets 401 with a JSON error.
//!
//! `Authorization: Basic` with the token as the password (or as the user name with an
//! empty password) is accepted too: that is what HTTP clients send for a URL such as
//! `http://nanoctrl:<token>@host:3000`, which is how the published Python `nanoctrl`
//! client (which takes only an address) can authenticate.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::AppError;
use crate::throttle::{suppressed_note, Throttle};

static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));

/// A configured token. `Debug` does not print it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token: non-empty, visible ASCII, at most 4096 bytes.
    pub fn new(t: &str) -> Result<Token, String> {
        let t = t.trim();
        if t.is_empty() {
            return Err("the token is empty".into());
        }
        if t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be at most 4096 visible ASCII characters".into());
        }
        Ok(Token(t.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `headers` carry this token (Bearer, or Basic as described above).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (scheme, cred) = v.trim().split_once(' ').unwrap_or((v, ""));
        let cred = cred.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return ct_eq(cred.as_bytes(), self.0.as_bytes());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred) else {
                return false;
            };
            let Ok(pair) = std::str::from_utf8(&raw) else {
                return false;
            };
            let (user, pass) = pair.split_once(':').unwrap_or((pair, ""));
            let presented = if pass.is_empty() { user } else { pass };
            return ct_eq(presented.as_bytes(), self.0.as_bytes());
        }
        false
    }
}

/// Comparison whose time does not depend on where the first difference is.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a token from a file (the first line, trimmed): keeps it out of `ps` and the
/// environment.
pub fn read_token_file(path: &std::path::Path) -> Result<Token, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
    Token::new(text.lines().next().unwrap_or(""))
        .map_err(|e| format!("--token-file {}: {e}", path.display()))
}

/// Middleware: with a token configured, a request without it gets 401.
pub async fn require_token(
    State(token): State<Option<Token>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(t) = &token {
        if !t.admits(req.headers()) {
            if let Some(n) = REFUSED.admit() {
                tracing::warn!(
                    "refused {} {}: no valid token{}",
                    req.method(),
                    req.uri().path(),
                    suppressed_note(n)
                );
            }
            return AppError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic() {
        let t = Token::new(" s3cret\n").unwrap();
        assert!(t.admits(&with("Bearer s3cret")));
        assert!(t.admits(&with("bearer  s3cret")));
        assert!(!t.admits(&with("Bearer s3cre")));
        assert!(!t.admits(&with("Bearer s3cret2")));
        assert!(!t.admits(&HeaderMap::new()));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(t.admits(&with(&format!("Basic {}", b64("nanoctrl:s3cret")))));
        assert!(t.admits(&with(&format!("Basic {}", b64("s3cret:")))));
        assert!(!t.admits(&with(&format!("Basic {}", b64("s3cret:x")))));
        assert!(!t.admits(&with("Basic !!!")));
        assert!(Token::new("").is_err());
        assert!(Token::new("a b").is_err());
        assert_eq!(format!("{t:?}"), "Token(..)");
    }
}
