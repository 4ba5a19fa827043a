//! Admin tokens: `JANITOR_ADMIN_TOKENS` (`name=token,name=token`) or
//! `[[admin_token]]` tables in the config file. Each token has a name,
//! recorded as `requested_by` and in the audit log. Tokens are compared in
//! constant time, and every configured token is compared every time.
//!
//! A token may be read-only (`name:ro=token`, or `read_only = true` in its
//! table): it may read everything and change nothing, in the API (every
//! POST is refused with 403 by [`super::audit::gate`]) and in the console.

use subtle::ConstantTimeEq as _;

/// A configured token.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    pub token: String,
    /// Sees everything, changes nothing.
    #[serde(default)]
    pub read_only: bool,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("token", &"***")
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// The shortest token accepted: guessing must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

/// Who presented a valid token, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub name: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<AdminToken>,
}

impl Tokens {
    pub fn new(tokens: Vec<AdminToken>) -> anyhow::Result<Self> {
        for token in &tokens {
            anyhow::ensure!(!token.name.is_empty(), "an admin token has an empty name");
            anyhow::ensure!(
                token.token.len() >= MIN_TOKEN_LEN,
                "admin token {:?} is shorter than {MIN_TOKEN_LEN} characters",
                token.name
            );
        }
        Ok(Self { tokens })
    }

    /// Parses `name=token,name:ro=token` (`:ro`: read-only).
    pub fn parse_env(raw: &str) -> anyhow::Result<Vec<AdminToken>> {
        raw.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, token) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("JANITOR_ADMIN_TOKENS entries are name=token pairs"))?;
                // The token itself may hold ':'; the name may not.
                let (name, read_only) = match name.split_once(':') {
                    None => (name, false),
                    Some((name, flag)) if flag.trim() == "ro" => (name, true),
                    Some((name, flag)) => anyhow::bail!(
                        "JANITOR_ADMIN_TOKENS: token {:?} has the flag {:?}; the only flag is \"ro\" (read-only)",
                        name.trim(),
                        flag.trim()
                    ),
                };
                Ok(AdminToken { name: name.trim().to_owned(), token: token.trim().to_owned(), read_only })
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Who the token presented is, if it is one of ours.
    pub fn verify(&self, presented: &str) -> Option<Grant> {
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(token);
            }
        }
        found.map(|token| Grant { name: token.name.clone(), read_only: token.read_only })
    }

    /// What a session may do now, if the token it was opened with (its name
    /// and the SHA-256 of its value, [`token_hash`]) is still configured: a
    /// console session outlives neither its token, nor a new value of it,
    /// nor a change to read-only. With several such tokens, the strictest
    /// counts. Every token's hash is compared, in constant time.
    pub fn grant_of(&self, name: &str, hash: &[u8]) -> Option<Grant> {
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token_hash(&token.token).as_slice().ct_eq(hash)) && token.name == name {
                found = Some(found.unwrap_or(false) || token.read_only);
            }
        }
        found.map(|read_only| Grant { name: name.to_owned(), read_only })
    }
}

/// The SHA-256 of a token's value, as a console session keeps it.
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_value_and_report_their_name() {
        let tokens =
            Tokens::new(Tokens::parse_env("ops=aaaaaaaaaaaaaaaa1, cron = bbbbbbbbbbbbbbbb2").unwrap()).unwrap();
        let name = |presented: &str| tokens.verify(presented).map(|grant| grant.name);
        assert_eq!(name("aaaaaaaaaaaaaaaa1").as_deref(), Some("ops"));
        assert_eq!(name("bbbbbbbbbbbbbbbb2").as_deref(), Some("cron"));
        assert_eq!(tokens.verify("aaaaaaaaaaaaaaaa"), None);
        assert_eq!(tokens.verify(""), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert!(Tokens::new(Tokens::parse_env("short=abc").unwrap()).is_err());
        assert!(Tokens::parse_env("no-equals-sign").is_err());
        assert!(!format!("{:?}", tokens.tokens[0]).contains("aaaa"), "tokens never reach logs");
    }

    #[test]
    fn a_token_flagged_ro_is_read_only() {
        let parsed = Tokens::parse_env("ops=aaaaaaaaaaaaaaaa1, viewer:ro = bbbbbbbb:bbbbbbb2").unwrap();
        let tokens = Tokens::new(parsed).unwrap();
        let ops = tokens.verify("aaaaaaaaaaaaaaaa1").unwrap();
        assert_eq!((ops.name.as_str(), ops.read_only), ("ops", false));
        let viewer = tokens.verify("bbbbbbbb:bbbbbbb2").unwrap();
        assert_eq!((viewer.name.as_str(), viewer.read_only), ("viewer", true), "a token may hold ':'");
        let viewer_hash = token_hash("bbbbbbbb:bbbbbbb2");
        assert_eq!(tokens.grant_of("viewer", &viewer_hash), Some(viewer));
        assert_eq!(tokens.grant_of("nobody", &viewer_hash), None);
        assert_eq!(tokens.grant_of("ops", &viewer_hash), None, "the name and the value must both match");
        let rotated = Tokens::new(Tokens::parse_env("viewer:ro=eeeeeeeeeeeeeeee5").unwrap()).unwrap();
        assert_eq!(rotated.grant_of("viewer", &viewer_hash), None, "a new value ends the old sessions");
        let err = Tokens::parse_env("ops:rw=aaaaaaaaaaaaaaaa1").unwrap_err().to_string();
        assert!(err.contains("only flag"), "{err}");
    }

    #[test]
    fn the_config_file_marks_a_token_read_only() {
        let config = crate::config::FileConfig::parse(
            "[[admin_token]]\nname = \"viewer\"\ntoken = \"cccccccccccccccc3\"\nread_only = true\n\n\
             [[admin_token]]\nname = \"ops\"\ntoken = \"dddddddddddddddd4\"\n",
        )
        .unwrap();
        let flags: Vec<(&str, bool)> =
            config.admin_token.iter().map(|token| (token.name.as_str(), token.read_only)).collect();
        assert_eq!(flags, [("viewer", true), ("ops", false)]);
    }
}
