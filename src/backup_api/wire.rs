//! What pg-backup-api says on the wire: the base URL for each form of `pg_backupapi_host`,
//! URL path segments, and the JSON and HTML replies of pg-backup-api 2.x (and before) read into
//! values and one-line summaries. Text from the API reaches the operator only through
//! [`printable`]: a reply is not trusted to be free of terminal escape sequences.

use super::{OperationStatus, DEFAULT_PORT};
use crate::error::{Error, ErrorKind, Result};
use serde_json::Value;
use states::api::{is_operation_id, ListedOperation};

/// The base URL for `pg_backupapi_host`: a bare host means `http://host:7480` (as repmgr), a
/// `host:port` means http on that port, a URL is used as given (without a trailing `/`).
pub fn base_url(host: &str) -> Result<String> {
    let host = host.trim();
    let invalid = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!("pg_backupapi_host \"{host}\" is not usable: {why}"),
        )
        .hint("give a host (http, port 7480), host:port, or a URL such as https://backup1:7443")
    };
    if host.is_empty() {
        return Err(invalid("it is empty"));
    }
    let url = if host.starts_with("http://") || host.starts_with("https://") {
        host.trim_end_matches('/').to_string()
    } else if host.contains("://") {
        return Err(invalid("only http:// and https:// are supported"));
    } else if has_port(host) {
        format!("http://{host}")
    } else if host.contains(':') && !host.starts_with('[') {
        // A bare IPv6 address.
        format!("http://[{host}]:{DEFAULT_PORT}")
    } else {
        format!("http://{host}:{DEFAULT_PORT}")
    };
    reqwest::Url::parse(&url).map_err(|e| invalid(&e.to_string()))?;
    Ok(url)
}

/// `host:port` or `[v6]:port`, not a bare IPv6 address.
fn has_port(host: &str) -> bool {
    let tail = if let Some(end) = host.rfind(']') {
        &host[end + 1..]
    } else if host.matches(':').count() == 1 {
        &host[host.find(':').unwrap_or(0)..]
    } else {
        return false;
    };
    tail.strip_prefix(':')
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// A path segment, percent-encoded (server names and ids are plain, but never trust config).
pub(super) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `{"operations":[{"id":…,"type":…},…]}` (2.x) or a list of bare ids (before 2.0). None when
/// the shape is wrong or an id is not one ([`is_operation_id`]).
pub(super) fn parse_operations(reply: &Value) -> Option<Vec<ListedOperation>> {
    reply
        .get("operations")?
        .as_array()?
        .iter()
        .map(|entry| match entry {
            Value::String(id) => Some(ListedOperation {
                id: id.clone(),
                kind: "recovery".to_string(),
            }),
            Value::Object(map) => Some(ListedOperation {
                id: map.get("id")?.as_str()?.to_string(),
                kind: map
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("recovery")
                    .to_string(),
            }),
            _ => None,
        })
        .map(|op| op.filter(|op| is_operation_id(&op.id)))
        .collect()
}

pub(super) fn parse_status(reply: &Value) -> Option<OperationStatus> {
    match reply.get("status")?.as_str()? {
        "IN_PROGRESS" => Some(OperationStatus::InProgress),
        "DONE" => Some(OperationStatus::Done),
        "FAILED" => Some(OperationStatus::Failed),
        _ => None,
    }
}

/// The message of a 404 (`{"error":"404 Not Found: …"}`), or a summary of the body;
/// printable either way.
pub(super) fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .map(|m| printable(m.trim_start_matches("404 Not Found: "), MAX_SHOWN))
        .unwrap_or_else(|| summary(text))
}

/// Characters of API-provided text shown in one message.
const MAX_SHOWN: usize = 200;

/// A one-line, printable summary of a body: an HTML page's title, or the text's start.
pub(super) fn summary(text: &str) -> String {
    let text = text.trim();
    if let (Some(start), Some(end)) = (text.find("<title>"), text.find("</title>")) {
        if start + 7 <= end {
            return format!(
                "HTML page \"{}\"",
                printable(&text[start + 7..end], MAX_SHOWN)
            );
        }
    }
    let line = printable(&text.replace('\n', " "), 120);
    if line.is_empty() {
        "(empty body)".to_string()
    } else {
        line
    }
}

/// `text` cut to `max` characters, with control characters (terminal escape sequences, a
/// carriage return that would overwrite the line) escaped as Rust writes them (`\u{1b}`).
pub(super) fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().take(max) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms_become_base_urls() {
        assert_eq!(base_url("backup1").unwrap(), "http://backup1:7480");
        assert_eq!(base_url("backup1:8080").unwrap(), "http://backup1:8080");
        assert_eq!(base_url("https://b1:7443/").unwrap(), "https://b1:7443");
        assert_eq!(base_url("http://127.0.0.1").unwrap(), "http://127.0.0.1");
        assert_eq!(base_url("::1").unwrap(), "http://[::1]:7480");
        assert_eq!(base_url("[::1]:9000").unwrap(), "http://[::1]:9000");
        assert_eq!(base_url("[::1]").unwrap(), "http://[::1]:7480");
        assert!(base_url("ftp://b1").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn operation_lists_of_both_generations_parse() {
        let v2: Value = serde_json::from_str(
            r#"{"operations":[{"id":"20261125T062405","type":"recovery"},{"id":"20261125T062410","type":"config_switch"}]}"#,
        )
        .unwrap();
        let ops = parse_operations(&v2).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1].kind, "config_switch");
        let v1: Value = serde_json::from_str(r#"{"operations":["20261125T062405"]}"#).unwrap();
        assert_eq!(parse_operations(&v1).unwrap()[0].kind, "recovery");
        assert!(parse_operations(&serde_json::json!({"ops": []})).is_none());
        // An id that is not one makes the whole reply malformed.
        let hostile =
            serde_json::json!({"operations": [{"id": "\u{1b}]0;owned\u{7}", "type": "recovery"}]});
        assert!(parse_operations(&hostile).is_none());
    }

    #[test]
    fn statuses_and_error_bodies_parse() {
        let done = serde_json::json!({"operation_id": "x", "status": "DONE"});
        assert_eq!(parse_status(&done), Some(OperationStatus::Done));
        assert_eq!(
            parse_status(&serde_json::json!({"operation_id": "x"})),
            None
        );
        assert_eq!(
            error_message(r#"{"error":"404 Not Found: Backup 'x' does not exist"}"#),
            "Backup 'x' does not exist"
        );
        assert_eq!(
            summary("<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>x</h1>"),
            "HTML page \"500 Internal Server Error\""
        );
        assert_eq!(segment("pg main/1"), "pg%20main%2F1");
    }

    #[test]
    fn text_from_the_api_is_printed_with_control_characters_escaped() {
        let red = "\u{1b}[31mred\u{1b}[0m\rover";
        assert_eq!(printable(red, 100), "\\u{1b}[31mred\\u{1b}[0m\\rover");
        assert_eq!(printable("ééé", 2), "éé");
        assert_eq!(summary(red), "\\u{1b}[31mred\\u{1b}[0m\\rover");
        assert_eq!(
            summary("<title>500 \u{1b}[2J</title>"),
            "HTML page \"500 \\u{1b}[2J\""
        );
        let json =
            serde_json::json!({"error": format!("404 Not Found: Backup '{red}' does not exist")});
        let message = error_message(&json.to_string());
        assert_eq!(
            message,
            "Backup '\\u{1b}[31mred\\u{1b}[0m\\rover' does not exist"
        );
        assert!(!message.chars().any(char::is_control));
        assert_eq!(summary(&"x".repeat(1000)).len(), 120);
    }
}
