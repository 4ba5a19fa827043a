//! Admin tokens: `JANITOR_ADMIN_TOKENS` (`name=token,name=token`) or
//! `[[admin_token]]` tables in the config file. Each token has a name,
//! recorded as `requested_by` and in the audit log. Tokens are compared in
//! constant time, and every configured token is compared every time.

use subtle::ConstantTimeEq as _;

/// A configured token.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken").field("name", &self.name).field("token", &"***").finish()
    }
}

/// The shortest token accepted: guessing must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

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

    /// Parses `name=token,name=token`.
    pub fn parse_env(raw: &str) -> anyhow::Result<Vec<AdminToken>> {
        raw.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, token) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("JANITOR_ADMIN_TOKENS entries are name=token pairs"))?;
                Ok(AdminToken { name: name.trim().to_owned(), token: token.trim().to_owned() })
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token presented, if it is one of ours.
    pub fn verify(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(token.name.as_str());
            }
        }
        found
    }
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
        assert_eq!(tokens.verify("aaaaaaaaaaaaaaaa1"), Some("ops"));
        assert_eq!(tokens.verify("bbbbbbbbbbbbbbbb2"), Some("cron"));
        assert_eq!(tokens.verify("aaaaaaaaaaaaaaaa"), None);
        assert_eq!(tokens.verify(""), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert!(Tokens::new(Tokens::parse_env("short=abc").unwrap()).is_err());
        assert!(Tokens::parse_env("no-equals-sign").is_err());
        assert!(!format!("{:?}", tokens.tokens[0]).contains("aaaa"), "tokens never reach logs");
    }
}
