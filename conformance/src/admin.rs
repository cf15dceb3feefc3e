//! Users and permissions on the broker under test, for the access scenarios:
//! through Warren's own API for the embedded Warren, through RabbitMQ's
//! management HTTP API (`PUT /api/users/NAME`, `PUT /api/permissions/VHOST/NAME`,
//! `DELETE /api/users/NAME`) for any other broker.
//!
//! The management API is found at `RABBITMQ_MANAGEMENT_URL` (`http://HOST:PORT`)
//! or on port 15672 of the AMQP URL's host, and logged into with the URL's
//! credentials.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_broker::auth::{Permissions, User, Users};

use crate::driver::{Fail, Url, R};

/// Embedded Warrens by AMQP address, whose users the scenarios change directly.
static EMBEDDED: Mutex<Vec<(String, Arc<Users>)>> = Mutex::new(Vec::new());

/// Makes the users of the embedded Warren at `addr` reachable to scenarios.
pub fn register_embedded(addr: &str, users: Arc<Users>) {
    lock().push((addr.to_owned(), users));
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(String, Arc<Users>)>> {
    EMBEDDED.lock().unwrap_or_else(|e| e.into_inner())
}

fn embedded(url: &Url) -> Option<Arc<Users>> {
    lock()
        .iter()
        .find(|(addr, _)| *addr == url.addr)
        .map(|(_, u)| u.clone())
}

/// Adds a user with no tags and, when given, (configure, write, read)
/// permissions in the URL's vhost.
pub async fn put_user(
    url: &Url,
    name: &str,
    password: &str,
    permissions: Option<(&str, &str, &str)>,
) -> R<()> {
    if let Some(users) = embedded(url) {
        users.put_user(User::new(name, password, &[]));
        if let Some((c, w, r)) = permissions {
            users
                .set_permissions(name, &url.vhost, Permissions::new(c, w, r))
                .map_err(Fail::msg)?;
        }
        return Ok(());
    }
    let body = format!(r#"{{"password":{},"tags":""}}"#, json_string(password));
    http(url, "PUT", &format!("/api/users/{}", encode(name)), &body).await?;
    if let Some((c, w, r)) = permissions {
        let body = format!(
            r#"{{"configure":{},"write":{},"read":{}}}"#,
            json_string(c),
            json_string(w),
            json_string(r)
        );
        let path = format!("/api/permissions/{}/{}", encode(&url.vhost), encode(name));
        http(url, "PUT", &path, &body).await?;
    }
    Ok(())
}

/// Deletes a user (and so its permissions).
pub async fn delete_user(url: &Url, name: &str) -> R<()> {
    if let Some(users) = embedded(url) {
        users.delete_user(name);
        return Ok(());
    }
    http(url, "DELETE", &format!("/api/users/{}", encode(name)), "").await
}

/// One request to the management API; any status but 2xx fails.
async fn http(url: &Url, method: &str, path: &str, body: &str) -> R<()> {
    let base = std::env::var("RABBITMQ_MANAGEMENT_URL").unwrap_or_else(|_| {
        let host = url
            .addr
            .rsplit_once(':')
            .map_or(url.addr.as_str(), |(h, _)| h);
        format!("http://{host}:15672")
    });
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let auth = base64(format!("{}:{}", url.user, url.password).as_bytes());
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(&addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .map_err(|_| Fail::msg(format!("management API at {addr}: no answer")))?
        .map_err(|e| Fail::msg(format!("management API at {addr}: {e}")))?;
    let status = String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if status
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'))
    {
        Ok(())
    } else {
        Err(Fail::msg(format!(
            "management API: {method} {path}: {status}"
        )))
    }
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(encode("/"), "%2F");
        assert_eq!(json_string("a\"b"), "\"a\\\"b\"");
    }
}
