//! The http health check's request and the reading of its answer: the
//! status line through `httparse`, 2xx and 3xx healthy.
//!
//! Pure: the caller does the non-blocking I/O.

use crate::unit::probe::HttpUrl;

/// Bytes of an answer read before giving up on finding its status line.
pub const MAX_HEAD: usize = 16 * 1024;

/// `GET path HTTP/1.1` with Host and `Connection: close`.
pub fn request(url: &HttpUrl, port: u16) -> Vec<u8> {
    let host = match url.port {
        crate::unit::probe::ProbePort::Unit => url.host.replace("$PORT", &port.to_string()),
        crate::unit::probe::ProbePort::Fixed(_) => url.host.clone(),
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: zurg-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    )
    .into_bytes()
}

/// What the bytes read so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No whole status line yet.
    Partial,
    /// 2xx or 3xx: "200 OK".
    Healthy(String),
    /// Any other status: "500 Internal Server Error".
    Unhealthy(String),
    /// Not HTTP.
    Garbage(String),
}

/// Reads the status line of `head` (the answer's first bytes).
pub fn answer(head: &[u8]) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let parsed = response.parse(head);
    // httparse fills the code and reason as soon as the status line is in,
    // even while the headers are partial or too many.
    if let Some(code) = response.code {
        let line = match response.reason {
            Some(reason) if !reason.is_empty() => format!("{code} {reason}"),
            _ => code.to_string(),
        };
        return if (200..400).contains(&code) {
            Answer::Healthy(line)
        } else {
            Answer::Unhealthy(line)
        };
    }
    match parsed {
        Ok(_) => Answer::Partial,
        Err(e) => Answer::Garbage(format!("not an HTTP answer ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_path_and_host() {
        let url = crate::unit::probe::http_url("http://127.0.0.1:$PORT/health?x=1").unwrap();
        let req = String::from_utf8(request(&url, 8080)).unwrap();
        assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(req.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn status_lines_decide() {
        assert_eq!(
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Answer::Healthy("200 OK".into())
        );
        assert_eq!(
            answer(b"HTTP/1.0 302 Found\r\n"),
            Answer::Healthy("302 Found".into())
        );
        assert_eq!(
            answer(b"HTTP/1.1 500 Internal Server Error\r\nServer: x"),
            Answer::Unhealthy("500 Internal Server Error".into())
        );
        assert_eq!(
            answer(b"HTTP/1.1 404 \r\n\r\n"),
            Answer::Unhealthy("404".into())
        );
        assert_eq!(answer(b"HTTP/1.1 20"), Answer::Partial);
        assert_eq!(answer(b""), Answer::Partial);
        assert!(matches!(answer(b"SSH-2.0-OpenSSH\r\n"), Answer::Garbage(_)));
    }
}
