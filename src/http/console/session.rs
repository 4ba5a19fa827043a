//! Console sessions: a random id in an `HttpOnly; SameSite=Strict` cookie,
//! its SHA-256 in `console_sessions`, for 12 hours.
//!
//! - The id is 32 bytes from the OS generator, so it cannot be guessed; the
//!   table holds only its hash, so a copy of the table opens no session.
//! - Each session has its own CSRF token, which every form that changes
//!   something carries and [`Session::check_csrf`] compares in constant
//!   time. `SameSite=Strict` already keeps the cookie off cross-site
//!   requests; the token is the second wall (older browsers, same-site
//!   subdomains).
//! - A session lives no longer than its token: each request looks the
//!   token's name and the SHA-256 of its value up among the configured
//!   tokens (a token given a new value ends its sessions), and a token that
//!   became read-only makes its sessions read-only.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;

use crate::http::auth::Grant;
use crate::http::AppState;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "janitor_session";

/// How long a session lasts from its login.
pub const TTL: chrono::Duration = chrono::Duration::hours(12);

/// Random bytes in an id or a CSRF token.
const SECRET_BYTES: usize = 32;

/// A session id as the browser holds it: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl SessionId {
    fn generate() -> Self {
        Self(random_hex())
    }

    /// A cookie value that has the shape of an id (anything else is no
    /// session, and costs no database round trip).
    pub fn parse(raw: &str) -> Option<Self> {
        let valid = raw.len() == 2 * SECRET_BYTES && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self(raw.to_owned()))
    }

    /// What the table stores.
    fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The id in a request's `Cookie` headers, if any.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        cookie_value(headers, COOKIE_NAME).and_then(Self::parse)
    }

    /// The `Set-Cookie` value that gives the browser this id.
    pub fn cookie(&self, secure: bool) -> String {
        format!("{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/{}", self.0, secure_flag(secure))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(***)")
    }
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}", secure_flag(secure))
}

fn secure_flag(secure: bool) -> &'static str {
    if secure {
        "; Secure"
    } else {
        ""
    }
}

/// Whether the browser reached us over TLS: `janitor serve` speaks plain
/// HTTP, so TLS is a proxy's, and the proxy says so.
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// A cookie's value in a request's `Cookie` headers, if any.
fn cookie_value<'h>(headers: &'h HeaderMap, cookie: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie)
        .map(|(_, value)| value.trim())
}

/// The login form's CSRF token lives in this cookie and in the form's
/// `csrf` field (a double submit): a page of another site can post the
/// form, but cannot read or set the cookie, and `SameSite=Strict` keeps
/// the browser from sending it with a cross-site request. So a login that
/// another site started (to log the browser in under the attacker's token)
/// is refused.
const LOGIN_COOKIE: &str = "janitor_login";

/// A fresh login form token, and the `Set-Cookie` value that goes with it
/// (for the login form's path only, for an hour).
pub fn login_token(secure: bool) -> (String, String) {
    let token = random_hex();
    let cookie =
        format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login; Max-Age=3600{}", secure_flag(secure));
    (token, cookie)
}

/// Whether a login's `csrf` field is the token of its cookie (in constant
/// time).
pub fn login_token_matches(headers: &HeaderMap, presented: Option<&str>) -> bool {
    match (cookie_value(headers, LOGIN_COOKIE), presented) {
        (Some(cookie), Some(field)) if !cookie.is_empty() => bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
        _ => false,
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    id_hash: Vec<u8>,
    /// SHA-256 of the token's value: see [`crate::http::auth::Tokens::grant_of`].
    token_hash: Vec<u8>,
    /// The token's name: the actor of this session's audit rows.
    pub name: String,
    pub read_only: bool,
    /// The token every changing form carries.
    pub csrf: String,
}

impl Session {
    /// Starts a session for a verified token; expired sessions go first.
    pub async fn create(pool: &PgPool, grant: &Grant, token_hash: Vec<u8>) -> sqlx::Result<(SessionId, Session)> {
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()").execute(pool).await?;
        let id = SessionId::generate();
        let session = Session {
            id_hash: id.hash(),
            token_hash,
            name: grant.name.clone(),
            read_only: grant.read_only,
            csrf: random_hex(),
        };
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, token_name, token_hash, read_only, csrf, expires_at)
             VALUES ($1, $2, $6, $3, $4, now() + make_interval(secs => $5))",
        )
        .bind(&session.id_hash)
        .bind(&session.name)
        .bind(session.read_only)
        .bind(&session.csrf)
        .bind(TTL.num_seconds() as f64)
        .bind(&session.token_hash)
        .execute(pool)
        .await?;
        Ok((id, session))
    }

    /// The live session of an id; an expired one is deleted when seen.
    pub async fn find(pool: &PgPool, id: &SessionId) -> sqlx::Result<Option<Session>> {
        let id_hash = id.hash();
        let row: Option<(String, Vec<u8>, bool, String, bool)> = sqlx::query_as(
            "SELECT token_name, token_hash, read_only, csrf, expires_at < now()
             FROM console_sessions WHERE id_hash = $1",
        )
        .bind(&id_hash)
        .fetch_optional(pool)
        .await?;
        match row {
            None => Ok(None),
            Some((.., true)) => {
                sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(&id_hash).execute(pool).await?;
                Ok(None)
            }
            Some((name, token_hash, read_only, csrf, false)) => {
                Ok(Some(Session { id_hash, token_hash, name, read_only, csrf }))
            }
        }
    }

    pub async fn end(&self, pool: &PgPool) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1").bind(&self.id_hash).execute(pool).await?;
        Ok(())
    }

    /// Whether a form's `csrf` field is this session's token (in constant
    /// time: the comparison tells nothing about how much of it matched).
    pub fn check_csrf(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|token| bool::from(token.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// No session: go and log in. (A redirect, not 401: this is a browser.)
pub fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Without admin tokens there is nobody to log in as.
        let Some(tokens) = &state.tokens else { return Err(to_login()) };
        let Some(id) = SessionId::from_headers(&parts.headers) else { return Err(to_login()) };
        let mut session = match Session::find(&state.pool, &id).await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(to_login()),
            Err(err) => {
                tracing::error!(error = %err, "console: cannot read the session");
                return Err(StatusCode::SERVICE_UNAVAILABLE.into_response());
            }
        };
        let Some(grant) = tokens.grant_of(&session.name, &session.token_hash) else { return Err(to_login()) };
        session.read_only |= grant.read_only;
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_and_only_that_shape_parses() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(&a.0), Some(a.clone()));
        assert_eq!(a.hash().len(), 32);
        assert_eq!(SessionId::parse("abc"), None);
        assert_eq!(SessionId::parse(&a.0.to_uppercase()), None);
        assert!(!format!("{a:?}").contains(&a.0), "ids never reach logs");
    }

    #[test]
    fn the_cookie_is_read_back_and_its_flags_are_set() {
        let id = SessionId::generate();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, format!("theme=dark; {COOKIE_NAME}={}", id.0).parse().unwrap());
        assert_eq!(SessionId::from_headers(&headers), Some(id.clone()));
        assert_eq!(id.cookie(false), format!("{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/", id.0));
        assert!(id.cookie(true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
        headers.insert("x-forwarded-proto", "HTTPS".parse().unwrap());
        assert!(is_https(&headers));
    }
}
