//! A minimal HTTP/1.1 server side: one request per connection (`Connection: close`), a
//! Content-Length body, and the reply shapes Flask/Werkzeug produce. It must not grow features
//! the API's clients do not use (no chunked bodies, no keep-alive).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest request body accepted (recovery requests are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The Content-Type header, lower-cased, without parameters.
    pub content_type: Option<String>,
    /// The Authorization header, as sent.
    pub authorization: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A reply.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    /// Flask's `jsonify`: compact JSON plus a trailing newline.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{value}\n"),
        }
    }

    /// Werkzeug's HTML error page.
    pub fn html_error(status: u16, description: &str) -> Reply {
        let name = reason(status);
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: format!(
                "<!doctype html>\n<html lang=en>\n<title>{status} {name}</title>\n<h1>{name}</h1>\n<p>{}</p>\n",
                escape(description)
            ),
        }
    }
}

/// Reads one request; `None` when the peer sent nothing usable.
pub fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let target = words.next()?;
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut length = 0;
    let mut content_type = None;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "authorization" => authorization = Some(value.to_string()),
            "content-type" => {
                content_type = Some(
                    value
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase(),
                )
            }
            _ => {}
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        content_type,
        authorization,
        body,
    })
}

/// Writes `reply` and closes (by drop).
pub fn write_reply(mut stream: &TcpStream, reply: &Reply) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nServer: Werkzeug/3.0.1 Python/3.11.2\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    // A client that went away is not the server's problem.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(reply.body.as_bytes());
    let _ = stream.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        202 => "ACCEPTED",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// `Basic base64(credentials)`, the Authorization header of HTTP basic authentication.
pub fn basic_authorization(credentials: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("Basic ");
    for chunk in credentials.as_bytes().chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let group = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_flask_shapes() {
        let json = Reply::json(202, &serde_json::json!({"operation_id": "20261125T062405"}));
        assert_eq!(json.body, "{\"operation_id\":\"20261125T062405\"}\n");
        let html = Reply::html_error(500, "The server encountered an internal error.");
        assert_eq!(
            basic_authorization("pgreplica:s3cret"),
            "Basic cGdyZXBsaWNhOnMzY3JldA=="
        );
        assert_eq!(basic_authorization("ab"), "Basic YWI=");
        assert_eq!(basic_authorization("a"), "Basic YQ==");
        assert!(html.body.starts_with(
            "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n"
        ));
    }
}
