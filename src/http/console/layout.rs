//! The frame every console page shares (header, navigation, the logout
//! form), the error page, and small renderings of numbers and times.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use crate::http::error::ApiError;

/// The product's name in every title and header.
const APP: &str = "janitor";

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · " (APP) }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// The hidden field every changing form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A page of a logged-in session.
pub fn page(session: &Session, title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    a.brand href="/" { (APP) }
                    nav aria-label="Main" {
                        ul {
                            li { a href="/" { "Overview" } }
                            li { a href="/jobs" { "Jobs" } }
                            li { a href="/plan" { "Plan a cleanup" } }
                            li { a href="/dead" { "Dead letters" } }
                            li { a href="/schedules" { "Schedules" } }
                            li { a href="/audit" { "Audit log" } }
                        }
                    }
                    div.who {
                        span id="token-name" { (session.name) }
                        @if session.read_only { " " span.badge { "read-only" } }
                        form id="logout" method="post" action="/logout" {
                            (csrf_field(session))
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (main) }
            }
        }
    }
}

/// A page without a session (the login page).
pub fn bare(title: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header { span.brand { (APP) } }
                main { (main) }
            }
        }
    }
}

/// An HTML response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// The page of a failed request, with the status of the API's error.
pub fn error(session: &Session, err: ApiError) -> Response {
    let status = err.status();
    let message = match &err {
        ApiError::Internal(detail) => {
            tracing::error!(error = %format!("{detail:#}"), "console request failed");
            "internal error (see the server's log)".to_owned()
        }
        ApiError::NotFound => "not found".to_owned(),
        other => other.to_string(),
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let main = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        p { a href="/" { "Back to the overview" } }
    };
    respond(status, page(session, title, main))
}

/// Bytes in binary units, one decimal.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in seconds, as people read it: `45 s`, `3 min 20 s`, `2 h 5 min`.
pub fn duration(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// A time, to the second, in UTC.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_say_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(duration(45.2), "45 s");
        assert_eq!(duration(200.0), "3 min 20 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
    }
}
