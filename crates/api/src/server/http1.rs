//! A small HTTP/1.1 codec with Firecracker's framing rules.
//!
//! Owns request-head parsing (via `httparse`), body framing by `Content-Length`, request-target
//! normalisation and response serialisation. It is pure (no I/O) so it can be fuzzed directly.
//!
//! Rules, after Firecracker's `micro_http` where they matter to clients:
//! - request bodies are framed by `Content-Length` only; `Transfer-Encoding` is refused;
//! - the payload limit is checked against `Content-Length` as soon as the head is complete;
//! - absolute-form targets (`http://host/path`) are accepted; empty segments (`//`, a trailing
//!   `/`) are dropped;
//! - responses carry no reason phrase (`HTTP/1.1 204 `), then `Server: Firecracker API`,
//!   `Connection`, optional `Deprecation: true`, and `Content-Type`/`Content-Length` only when
//!   there is a body.
//!
//! Unlike `micro_http`, every error this codec produces is a valid JSON `fault_message` body
//! and the connection is closed after an error that loses framing.

use super::FIRECRACKER_SERVER_HEADER;

/// Longest request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 32;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token as sent (case-sensitive).
    pub method: String,
    /// Normalised origin-form path (`/a/b`), query string preserved.
    pub target: String,
    /// HTTP minor version (0 or 1).
    pub minor_version: u8,
    /// Declared body length.
    pub content_length: usize,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// Header names and values (values lossily decoded).
    pub headers: Vec<(String, String)>,
}

/// Why a head could not be accepted. `Display` is the `fault_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Malformed request line or headers.
    #[error("Invalid request: {0}.")]
    Invalid(String),
    /// Request head too large.
    #[error("Invalid request: the request head exceeds {MAX_HEAD_BYTES} bytes.")]
    HeadTooLarge,
    /// Body larger than the server's limit.
    #[error(
        "Request payload with size {size} is larger than the limit of {limit} allowed by server."
    )]
    PayloadTooLarge {
        /// Declared `Content-Length`.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
}

/// Outcome of trying to parse a request head from a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    /// Need more bytes.
    Partial,
    /// A complete head occupying the first `usize` bytes of the buffer.
    Complete(RequestHead, usize),
}

/// Parse the request head at the start of `buf`, enforcing `max_payload` on `Content-Length`.
pub fn parse_head(buf: &[u8], max_payload: usize) -> Result<HeadParse, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD_BYTES {
                Err(HeadError::HeadTooLarge)
            } else {
                Ok(HeadParse::Partial)
            };
        }
        Err(e) => return Err(HeadError::Invalid(e.to_string())),
    };
    if consumed > MAX_HEAD_BYTES {
        return Err(HeadError::HeadTooLarge);
    }
    let method = req.method.unwrap_or_default().to_owned();
    let raw_target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or(1);

    let mut content_length: Option<u64> = None;
    let mut expect_continue = false;
    let mut connection_close = minor_version == 0;
    let mut out_headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(&value)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HeadError::Invalid(
                    "conflicting Content-Length headers".into(),
                ));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Invalid(
                "Transfer-Encoding is not supported".into(),
            ));
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    connection_close = false;
                }
            }
        }
        out_headers.push((h.name.to_owned(), value));
    }
    let declared = content_length.unwrap_or(0);
    let content_length = usize::try_from(declared)
        .ok()
        .filter(|n| *n <= max_payload)
        .ok_or(HeadError::PayloadTooLarge {
            size: declared,
            limit: max_payload,
        })?;

    Ok(HeadParse::Complete(
        RequestHead {
            method,
            target: normalize_target(raw_target)?,
            minor_version,
            content_length,
            expect_continue,
            close: connection_close,
            headers: out_headers,
        },
        consumed,
    ))
}

fn parse_content_length(value: &str) -> Result<u64, HeadError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Invalid("invalid Content-Length".into()));
    }
    // Over-long digit strings saturate and are then refused by the payload limit.
    Ok(value.parse::<u64>().unwrap_or(u64::MAX))
}

/// Strip an absolute-form prefix and drop empty path segments.
fn normalize_target(raw: &str) -> Result<String, HeadError> {
    let mut rest = raw;
    for scheme in ["http://", "https://"] {
        // `get`: the target may hold non-ASCII bytes, so the prefix may end inside a character.
        if rest
            .get(..scheme.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
        {
            rest = &rest[scheme.len()..];
            rest = rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    if !rest.starts_with('/') {
        return Err(HeadError::Invalid(
            "the request target must be a path".into(),
        ));
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// A response ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseParts<'a> {
    /// Status code.
    pub status: u16,
    /// Add `Deprecation: true`.
    pub deprecation: bool,
    /// Close the connection after this response.
    pub close: bool,
    /// JSON body (empty for none).
    pub body: &'a [u8],
}

/// Serialise a response the way Firecracker does.
pub fn write_response(out: &mut Vec<u8>, r: &ResponseParts<'_>) {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {} \r\nServer: {FIRECRACKER_SERVER_HEADER}\r\n",
        r.status
    );
    head.push_str(if r.close {
        "Connection: close\r\n"
    } else {
        "Connection: keep-alive\r\n"
    });
    if r.deprecation {
        head.push_str("Deprecation: true\r\n");
    }
    if !r.body.is_empty() {
        let _ = write!(
            head,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            r.body.len()
        );
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(r.body);
}

/// The interim response to `Expect: 100-continue`.
pub fn continue_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 100 \r\nServer: {FIRECRACKER_SERVER_HEADER}\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn head(s: &str) -> RequestHead {
        match parse_head(s.as_bytes(), 51200).unwrap() {
            HeadParse::Complete(h, n) => {
                assert_eq!(n, s.len());
                h
            }
            HeadParse::Partial => panic!("partial"),
        }
    }

    #[test]
    fn test_should_normalize_targets_like_firecracker() {
        assert_eq!(
            head("GET http://localhost/version HTTP/1.1\r\n\r\n").target,
            "/version"
        );
        assert_eq!(
            head("GET //drives//a/ HTTP/1.1\r\n\r\n").target,
            "/drives/a"
        );
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").target, "/");
        assert_eq!(head("GET /x?y=1 HTTP/1.1\r\n\r\n").target, "/x?y=1");
        assert!(parse_head(b"GET x HTTP/1.1\r\n\r\n", 10).is_err());
    }

    /// Regression (found by `fuzz/` `http_codec`): a target with a multi-byte character where
    /// the `http://` prefix would end panicked (a `str` sliced inside a character), which
    /// aborted the whole process on the API thread.
    #[test]
    fn test_should_refuse_a_non_ascii_target_prefix_without_panicking() {
        for target in [
            "http:/\u{45b}ocalhost//vm",
            "htt\u{e9}://x/vm",
            "\u{e9}",
            "https:/\u{1f600}/a",
        ] {
            let req = format!("GET {target} HTTP/1.1\r\n\r\n");
            assert_eq!(
                parse_head(req.as_bytes(), 51200).unwrap_err().to_string(),
                "Invalid request: the request target must be a path.",
                "{target}"
            );
        }
        assert_eq!(
            head("GET http://h\u{45b}st/a/\u{45b} HTTP/1.1\r\n\r\n").target,
            "/a/\u{45b}"
        );
    }

    #[test]
    fn test_should_frame_by_content_length_and_enforce_limit() {
        let h = head("PUT /a HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.content_length, 12);
        assert!(h.expect_continue);
        let err = parse_head(b"PUT /a HTTP/1.1\r\nContent-Length: 60042\r\n\r\n", 51200);
        assert_eq!(
            err.unwrap_err().to_string(),
            "Request payload with size 60042 is larger than the limit of 51200 allowed by server."
        );
        assert!(parse_head(b"PUT /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 10).is_err());
        assert!(parse_head(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 10).is_err());
        let huge = parse_head(
            b"PUT /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            10,
        );
        assert!(matches!(huge, Err(HeadError::PayloadTooLarge { .. })));
    }

    #[test]
    fn test_should_honour_connection_semantics() {
        assert!(head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.1\r\n\r\n").close);
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
    }

    #[test]
    fn test_should_report_partial_and_oversized_heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 10).unwrap(),
            HeadParse::Partial
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            parse_head(big.as_bytes(), 10).unwrap_err(),
            HeadError::HeadTooLarge
        );
    }

    #[test]
    fn test_should_write_firecracker_shaped_responses() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            &ResponseParts {
                status: 204,
                deprecation: false,
                close: false,
                body: b"",
            },
        );
        assert_eq!(
            out,
            b"HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n"
        );
        out.clear();
        write_response(
            &mut out,
            &ResponseParts {
                status: 400,
                deprecation: true,
                close: true,
                body: b"{}",
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: close\r\nDeprecation: true\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn prop_head_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_head(&bytes, 51200);
        }

        #[test]
        fn prop_head_parser_never_panics_on_near_valid(
            method in "[A-Z]{1,8}", path in "[ -~]{0,64}", hv in "[ -~]{0,40}"
        ) {
            let raw = format!("{method} {path} HTTP/1.1\r\nContent-Length: {hv}\r\nX: {hv}\r\n\r\n");
            let _ = parse_head(raw.as_bytes(), 51200);
        }
    }
}
