//! HTTP/1.x requests and responses as Firecracker's MMDS speaks them (its `micro_http` crate).
//!
//! [`parse_request`] takes the bytes of one request up to and including its blank line and
//! reproduces `micro_http`'s acceptance rules and error texts; [`Response`] serializes exactly
//! like `micro_http` (`HTTP/1.1 200 ` with no reason phrase, `Server: Firecracker API`,
//! `Connection: keep-alive`, `Content-Type`/`Content-Length` last). [`parse_error_response`] maps a
//! parse error to the status/body Firecracker's MMDS endpoint answers it with.
//!
//! Pure functions over byte slices; input is bounded by the caller (at most the TCP receive
//! buffer, 2 500 bytes).

use std::fmt;

/// Request methods `micro_http` recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

/// HTTP versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    #[default]
    Http11,
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Media types for `Accept` and `Content-Type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaType {
    /// `text/plain`
    PlainText,
    /// `application/json` (`micro_http`'s response default)
    #[default]
    ApplicationJson,
}

impl MediaType {
    fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "text/plain" => Some(MediaType::PlainText),
            "application/json" => Some(MediaType::ApplicationJson),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            MediaType::PlainText => "text/plain",
            MediaType::ApplicationJson => "application/json",
        }
    }
}

/// Header errors (`micro_http::HttpHeaderError` texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// A header line without `:`.
    InvalidFormat(String),
    /// A bad value for a header whose value is checked.
    InvalidValue(String, String),
    /// A header that is refused by name (MMDS: `X-Forwarded-For` on a token `PUT`).
    UnsupportedName(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::InvalidFormat(k) => write!(f, "Header is incorrectly formatted. Key: {k}"),
            HeaderError::InvalidValue(k, v) => write!(f, "Invalid value. Key:{k}; Value:{v}"),
            HeaderError::UnsupportedName(k) => write!(f, "Unsupported header name. Key: {k}"),
        }
    }
}

/// Request errors (`micro_http::RequestError` texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// A header error.
    Header(HeaderError),
    /// Unknown method; the text is the inner message.
    InvalidHttpMethod(&'static str),
    /// Unknown version; the text is the inner message.
    InvalidHttpVersion(&'static str),
    /// Anything else malformed.
    InvalidRequest,
    /// Empty or non-UTF-8 URI; the text is the inner message.
    InvalidUri(&'static str),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Header(h) => write!(f, "Invalid header. Reason: {h}"),
            RequestError::InvalidHttpMethod(m) => write!(f, "Invalid HTTP Method: {m}"),
            RequestError::InvalidHttpVersion(m) => write!(f, "Invalid HTTP Version: {m}"),
            RequestError::InvalidRequest => f.write_str("Invalid request."),
            RequestError::InvalidUri(m) => write!(f, "Invalid URI: {m}"),
        }
    }
}

/// A parsed request head (MMDS ignores bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target as sent.
    pub uri: String,
    /// The version.
    pub version: Version,
    /// `Accept` (default `text/plain`; unknown values are ignored).
    pub accept: MediaType,
    /// Headers `micro_http` does not know, name and value trimmed, in arrival order (a repeated
    /// name replaces the earlier value).
    pub custom_headers: Vec<(String, String)>,
}

impl Request {
    /// The absolute path of the target: `http://host/path` → `/path`, `/path` → `/path`,
    /// anything else → empty.
    pub fn abs_path(&self) -> &str {
        if let Some(rest) = self.uri.strip_prefix("http://") {
            rest.find('/').map_or("", |i| &rest[i..])
        } else if self.uri.starts_with('/') {
            &self.uri
        } else {
            ""
        }
    }

    /// The first custom header whose name matches one of `names` (ASCII case-insensitive).
    pub fn custom_header(&self, names: &[&str]) -> Option<(&str, &str)> {
        self.custom_headers
            .iter()
            .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one request: request line, headers up to the blank line, and (for methods that may
/// carry one) a body of exactly `Content-Length` bytes.
pub fn parse_request(bytes: &[u8]) -> Result<Request, RequestError> {
    let line_end = find(bytes, b"\r\n").ok_or(RequestError::InvalidRequest)?;
    let line = &bytes[..line_end];
    // "GET" SP "HTTP/1.0" CRLF is the shortest request line micro_http looks at.
    if line.len() < 3 + 1 + 8 + 2 {
        return Err(RequestError::InvalidRequest);
    }
    let sp1 = find(line, b" ").ok_or(RequestError::InvalidRequest)?;
    let rest = &line[sp1 + 1..];
    let sp2 = find(rest, b" ").ok_or(RequestError::InvalidRequest)?;
    let (method, uri, version) = (&line[..sp1], &rest[..sp2], &rest[sp2 + 1..]);
    let method = match method {
        b"GET" => Method::Get,
        b"PUT" => Method::Put,
        b"PATCH" => Method::Patch,
        b"DELETE" => Method::Delete,
        _ => return Err(RequestError::InvalidHttpMethod("Unsupported HTTP method.")),
    };
    if uri.is_empty() {
        return Err(RequestError::InvalidUri("Empty URI not allowed."));
    }
    let uri = std::str::from_utf8(uri)
        .map_err(|_| RequestError::InvalidUri("Cannot parse URI as UTF-8."))?
        .to_owned();
    let version = match version {
        b"HTTP/1.0" => Version::Http10,
        b"HTTP/1.1" => Version::Http11,
        _ => {
            return Err(RequestError::InvalidHttpVersion(
                "Unsupported HTTP version.",
            ));
        }
    };
    let mut request = Request {
        method,
        uri,
        version,
        accept: MediaType::PlainText,
        custom_headers: Vec::new(),
    };
    let after_line = &bytes[line_end..];
    let blank = find(after_line, b"\r\n\r\n").ok_or(RequestError::InvalidRequest)?;
    if blank == 0 {
        return Ok(request);
    }
    let headers = &after_line[2..blank];
    let text = std::str::from_utf8(headers).map_err(|_| RequestError::InvalidRequest)?;
    let mut content_length = 0u32;
    for header_line in text.split("\r\n") {
        if header_line.is_empty() {
            break;
        }
        parse_header_line(header_line, &mut request, &mut content_length)?;
    }
    if content_length != 0 {
        if matches!(method, Method::Get | Method::Delete) {
            return Err(RequestError::InvalidRequest);
        }
        let body = &after_line[blank + 4..];
        if body.len() != content_length as usize {
            return Err(RequestError::InvalidRequest);
        }
    }
    Ok(request)
}

fn parse_header_line(
    line: &str,
    req: &mut Request,
    content_length: &mut u32,
) -> Result<(), RequestError> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(RequestError::Header(HeaderError::InvalidFormat(
            line.to_owned(),
        )));
    };
    match name.to_ascii_lowercase().trim() {
        "content-length" => {
            *content_length = value.trim().parse::<u32>().map_err(|_| {
                RequestError::Header(HeaderError::InvalidValue(name.to_owned(), value.to_owned()))
            })?;
        }
        "accept" => {
            // Unknown media types (`*/*`, lists) are ignored, keeping `text/plain`.
            if let Some(media) = MediaType::parse(value) {
                req.accept = media;
            }
        }
        // Values micro_http checks but MMDS never reads; bad ones are ignored.
        "content-type" | "expect" | "transfer-encoding" | "server" => {}
        "accept-encoding" => check_accept_encoding(value.trim())?,
        _ => {
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            if let Some(slot) = req.custom_headers.iter_mut().find(|(k, _)| *k == name) {
                slot.1 = value;
            } else {
                req.custom_headers.push((name, value));
            }
        }
    }
    Ok(())
}

fn check_accept_encoding(value: &str) -> Result<(), RequestError> {
    if value.is_empty() {
        return Err(RequestError::InvalidRequest);
    }
    for encoding in value.split(',') {
        let refused = match encoding.trim() {
            "identity;q=0" => true,
            "*;q=0" => !value.contains("identity"),
            _ => false,
        };
        if refused {
            return Err(RequestError::Header(HeaderError::InvalidValue(
                "Accept-Encoding".to_owned(),
                encoding.to_owned(),
            )));
        }
    }
    Ok(())
}

/// A response, serialized like `micro_http`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The version (the request's, or HTTP/1.1 for parse errors).
    pub version: Version,
    /// The status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: MediaType,
    /// The body.
    pub body: Vec<u8>,
    /// Whether to send `Allow: GET, PUT` (405).
    pub allow_get_put: bool,
    /// Extra headers (the token TTL echo).
    pub custom_headers: Vec<(String, String)>,
}

impl Response {
    /// A response with a body.
    pub fn new(
        version: Version,
        status: u16,
        content_type: MediaType,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            version,
            status,
            content_type,
            body: body.into(),
            allow_get_put: false,
            custom_headers: Vec::new(),
        }
    }

    /// Appends the serialized response to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{} {} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n",
            self.version.as_str(),
            self.status
        );
        if self.allow_get_put {
            out.extend_from_slice(b"Allow: GET, PUT\r\n");
        }
        for (k, v) in &self.custom_headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        let _ = write!(
            out,
            "Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
            self.content_type.as_str(),
            self.body.len()
        );
        out.extend_from_slice(&self.body);
    }

    /// The serialized response.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// The response Firecracker's MMDS endpoint sends for a request it cannot parse.
pub fn parse_error_response(err: &RequestError) -> Response {
    let (status, body) = match err {
        RequestError::InvalidUri(m) => (400, (*m).to_owned()),
        RequestError::InvalidHttpMethod(m) | RequestError::InvalidHttpVersion(m) => {
            (501, (*m).to_owned())
        }
        RequestError::Header(h) => (400, h.to_string()),
        RequestError::InvalidRequest => (400, "Invalid request.".to_owned()),
    };
    Response::new(Version::Http11, status, MediaType::ApplicationJson, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_requests() {
        let r = parse_request(b"GET http://169.254.169.254/latest/meta-data HTTP/1.1\r\nAccept: application/json\r\nX-metadata-token: abc \r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.accept, MediaType::ApplicationJson);
        assert_eq!(r.abs_path(), "/latest/meta-data");
        assert_eq!(
            r.custom_header(&["x-METADATA-token"]),
            Some(("X-metadata-token", "abc"))
        );
        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.abs_path(), "/");
        assert_eq!(r.accept, MediaType::PlainText);
        let r = parse_request(b"GET / HTTP/1.0\r\nAccept: */*\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.accept, MediaType::PlainText);
        let r = parse_request(b"GET http://169.254.169.254 HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.abs_path(), "");
        let r = parse_request(b"GET foo HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.abs_path(), "");
    }

    #[test]
    fn error_texts() {
        let cases: [(&[u8], u16, &str); 9] = [
            (
                b"GET http://169.254.169.255/ HTTP/2.0\r\n\r\n",
                501,
                "Unsupported HTTP version.",
            ),
            (
                b"GIT http://169.254.169.255/ HTTP/1.1\r\n\r\n",
                501,
                "Unsupported HTTP method.",
            ),
            (b"GET  HTTP/1.10\r\n\r\n", 400, "Empty URI not allowed."),
            (b"GET / HTTP/1.1\n\n", 400, "Invalid request."),
            (
                b"GET / HTTP/1.1\r\nfoo\r\n\r\n",
                400,
                "Header is incorrectly formatted. Key: foo",
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: alpha\r\n\r\n",
                400,
                "Invalid value. Key:Content-Length; Value: alpha",
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                400,
                "Invalid request.",
            ),
            (
                b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
                400,
                "Invalid request.",
            ),
            (
                b"GET / HTTP/1.1\r\nAccept-Encoding: deflate, *;q=0\r\n\r\n",
                400,
                "Invalid value. Key:Accept-Encoding; Value: *;q=0",
            ),
        ];
        for (req, status, body) in cases {
            let err = parse_request(req).unwrap_err();
            let resp = parse_error_response(&err);
            assert_eq!(
                (resp.status, String::from_utf8(resp.body).unwrap().as_str()),
                (status, body),
                "{req:?}"
            );
        }
        assert!(parse_request(b"PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").is_ok());
    }

    #[test]
    fn response_serialization() {
        let mut r = Response::new(
            Version::Http10,
            405,
            MediaType::PlainText,
            "Not allowed HTTP method.",
        );
        r.allow_get_put = true;
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "HTTP/1.0 405 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nAllow: GET, PUT\r\n\
             Content-Type: text/plain\r\nContent-Length: 24\r\n\r\nNot allowed HTTP method."
        );
        let mut r = Response::new(Version::Http11, 200, MediaType::PlainText, "tok");
        r.custom_headers
            .push(("X-metadata-token-ttl-seconds".into(), "60".into()));
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\
             X-metadata-token-ttl-seconds: 60\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\ntok"
        );
    }
}
