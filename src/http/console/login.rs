//! `GET /login`, `POST /login`, `POST /logout`.
//!
//! A login checks the token exactly as the API's gate does
//! ([`Tokens::verify`](crate::http::auth::Tokens::verify), constant time),
//! behind the same failed-authentication limit per address
//! ([`AuthFailures`](crate::http::failures::AuthFailures)): a wrong token
//! costs the address one of its tries, and past the limit even a right one
//! is refused. Behind a trusted reverse proxy the address is the client's
//! from `X-Forwarded-For` ([`TrustedProxies`](crate::http::proxies::TrustedProxies)).
//! Logins and logouts are audit rows under the token's name.
//!
//! The login form carries a CSRF token too, in a cookie and a field
//! ([`session::login_token`]): a login posted from another site is refused
//! (it would log the browser in under someone else's token).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::layout;
use super::session::{self, Session};
use super::{audit, form_field, Remote};
use crate::http::failures::Audit;
use crate::http::AppState;

fn login_page(error: Option<&str>, csrf: &str) -> Markup {
    layout::bare(
        "Log in",
        html! {
            h1 { "Log in" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form id="login" method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "Token" }
                input id="token" name="token" type="password" autocomplete="current-password";
                button type="submit" { "Log in" }
            }
            p.hint { "Use an admin token (JANITOR_ADMIN_TOKENS). A read-only token can look, not act." }
        },
    )
}

/// The login form with a fresh CSRF token, in its field and its cookie.
fn form_page(status: StatusCode, error: Option<&str>, headers: &HeaderMap) -> Response {
    let (csrf, cookie) = session::login_token(session::is_https(headers));
    let mut response = layout::respond(status, login_page(error, &csrf));
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

pub async fn form(headers: HeaderMap) -> Response {
    form_page(StatusCode::OK, None, &headers)
}

pub async fn login(State(state): State<AppState>, remote: Remote, headers: HeaderMap, body: Bytes) -> Response {
    const PATH: &str = "/login";
    let source = state.proxies.source(remote.peer, &headers);
    let Some(tokens) = &state.tokens else {
        let message = "The console needs admin tokens (JANITOR_ADMIN_TOKENS); none is configured.";
        return form_page(StatusCode::FORBIDDEN, Some(message), &headers);
    };
    if let Err((retry_after, counted)) = state.failures.admit(source, "POST", PATH) {
        if counted == Audit::Write {
            audit(&state, None, "POST", PATH, &remote, 429, None).await;
        }
        let message = format!("Too many failed logins from this address; try again in {retry_after} s.");
        let mut response = form_page(StatusCode::TOO_MANY_REQUESTS, Some(&message), &headers);
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    // Before the token is looked at: a login another site posted is
    // refused whatever it carries, and costs the address a try.
    if !session::login_token_matches(&headers, form_field(&body, "csrf").as_deref()) {
        if state.failures.failed(source, "POST", PATH) == Audit::Write {
            audit(&state, None, "POST", PATH, &remote, 403, None).await;
        }
        let message = "The login form expired or was sent from another site; log in again.";
        return form_page(StatusCode::FORBIDDEN, Some(message), &headers);
    }
    let presented = form_field(&body, "token").unwrap_or_default();
    let Some(grant) = tokens.verify(&presented) else {
        if state.failures.failed(source, "POST", PATH) == Audit::Write {
            audit(&state, None, "POST", PATH, &remote, 401, None).await;
        }
        return form_page(StatusCode::UNAUTHORIZED, Some("That token was not accepted."), &headers);
    };
    let (id, _) = match Session::create(&state.pool, &grant, crate::http::auth::token_hash(&presented)).await {
        Ok(created) => created,
        Err(err) => {
            tracing::error!(error = %err, "console: cannot store the session");
            let message = "The session could not be stored; try again.";
            return form_page(StatusCode::SERVICE_UNAVAILABLE, Some(message), &headers);
        }
    };
    audit(&state, Some(&grant.name), "POST", PATH, &remote, 303, None).await;
    tracing::info!(actor = %grant.name, read_only = grant.read_only, "console login");
    let cookie = id.cookie(session::is_https(&headers));
    (StatusCode::SEE_OTHER, [(LOCATION, "/".to_owned()), (SET_COOKIE, cookie)]).into_response()
}

pub async fn logout(
    State(state): State<AppState>,
    remote: Remote,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const PATH: &str = "/logout";
    if !session.check_csrf(form_field(&body, "csrf").as_deref()) {
        audit(&state, Some(&session.name), "POST", PATH, &remote, 403, None).await;
        return super::forbidden(&session, "the form's CSRF token is missing or wrong; reload the page");
    }
    if let Err(err) = session.end(&state.pool).await {
        return layout::error(&session, err.into());
    }
    audit(&state, Some(&session.name), "POST", PATH, &remote, 303, None).await;
    let cookie = session::clear_cookie(session::is_https(&headers));
    (StatusCode::SEE_OTHER, [(LOCATION, "/login".to_owned()), (SET_COOKIE, cookie)]).into_response()
}
