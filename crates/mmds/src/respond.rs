//! MMDS request semantics: what the guest gets for a parsed HTTP request.
//!
//! Firecracker's `convert_to_response`: `GET` reads the store (V1: token optional, only counted;
//! V2: token required), `PUT /latest/api/token` issues a session token (either version),
//! anything else is 405. Texts, statuses and content types are Firecracker's.
//!
//! Called by the TCP endpoint with the store locked for the duration of one request.

use crate::http::{HeaderError, MediaType, Method, Request, RequestError, Response};
use crate::metrics::{MmdsMetrics, inc};
use crate::store::{Mmds, MmdsError, MmdsVersion, OutputFormat, sanitize_path};
use crate::token::PATH_TO_TOKEN;

/// `X-Forwarded-For` (refused on token `PUT`s, like EC2 IMDS).
pub const X_FORWARDED_FOR_HEADER: &str = "x-forwarded-for";
/// `X-metadata-token`
pub const X_METADATA_TOKEN_HEADER: &str = "x-metadata-token";
/// `X-aws-ec2-metadata-token`
pub const X_AWS_EC2_METADATA_TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// `X-metadata-token-ttl-seconds`
pub const X_METADATA_TOKEN_TTL_SECONDS_HEADER: &str = "x-metadata-token-ttl-seconds";
/// `X-aws-ec2-metadata-token-ttl-seconds`
pub const X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS_HEADER: &str =
    "x-aws-ec2-metadata-token-ttl-seconds";

const TOKEN_HEADERS: &[&str] = &[X_METADATA_TOKEN_HEADER, X_AWS_EC2_METADATA_TOKEN_HEADER];
const TTL_HEADERS: &[&str] = &[
    X_METADATA_TOKEN_TTL_SECONDS_HEADER,
    X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS_HEADER,
];

/// Firecracker's `VmmMmdsError` texts.
pub mod texts {
    /// 401, V2 token missing.
    pub const NO_TOKEN: &str = "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` header to specify the session token.";
    /// 401, token invalid or expired.
    pub const INVALID_TOKEN: &str = "MMDS token not valid.";
    /// 400, token `PUT` without TTL.
    pub const NO_TTL: &str = "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or `X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.";
    /// 405.
    pub const METHOD_NOT_ALLOWED: &str = "Not allowed HTTP method.";
    /// 400, target without an absolute path.
    pub const INVALID_URI: &str = "Invalid URI.";
}

fn plain(req: &Request, status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response::new(req.version, status, MediaType::PlainText, body)
}

fn not_found(req: &Request, path: &str) -> Response {
    plain(req, 404, format!("Resource not found: {path}."))
}

/// Answers one request.
pub fn respond(mmds: &mut Mmds, req: &Request, metrics: &MmdsMetrics) -> Response {
    if req.abs_path().is_empty() {
        return plain(req, 400, texts::INVALID_URI);
    }
    match req.method {
        Method::Get => {
            match (mmds.version(), req.custom_header(TOKEN_HEADERS)) {
                (MmdsVersion::V1, Some((_, token))) => {
                    if !mmds.is_valid_token(token) {
                        inc(&metrics.rx_invalid_token);
                    }
                }
                (MmdsVersion::V1, None) => inc(&metrics.rx_no_token),
                (MmdsVersion::V2, None) => {
                    inc(&metrics.rx_no_token);
                    return plain(req, 401, texts::NO_TOKEN);
                }
                (MmdsVersion::V2, Some((_, token))) => {
                    if !mmds.is_valid_token(token) {
                        inc(&metrics.rx_invalid_token);
                        return plain(req, 401, texts::INVALID_TOKEN);
                    }
                }
            }
            respond_get(mmds, req)
        }
        Method::Put => respond_put(mmds, req),
        Method::Patch | Method::Delete => {
            let mut r = plain(req, 405, texts::METHOD_NOT_ALLOWED);
            r.allow_get_put = true;
            r
        }
    }
}

fn respond_get(mmds: &Mmds, req: &Request) -> Response {
    let path = req.abs_path();
    let format = match req.accept {
        MediaType::ApplicationJson => OutputFormat::Json,
        MediaType::PlainText => OutputFormat::Imds,
    };
    match mmds.get_value(&sanitize_path(path), format) {
        Ok(body) => Response::new(req.version, 200, req.accept, body),
        Err(MmdsError::UnsupportedValueType) => {
            plain(req, 501, MmdsError::UnsupportedValueType.to_string())
        }
        Err(e @ MmdsError::DataStoreLimitExceeded) => plain(req, 413, e.to_string()),
        Err(_) => not_found(req, path),
    }
}

fn respond_put(mmds: &mut Mmds, req: &Request) -> Response {
    if let Some((name, _)) = req.custom_header(&[X_FORWARDED_FOR_HEADER]) {
        let err = RequestError::Header(HeaderError::UnsupportedName(name.to_owned()));
        return plain(req, 400, err.to_string());
    }
    let path = req.abs_path();
    if sanitize_path(path) != PATH_TO_TOKEN {
        return not_found(req, path);
    }
    let Some((name, value)) = req.custom_header(TTL_HEADERS) else {
        return plain(req, 400, texts::NO_TTL);
    };
    let Ok(ttl) = value.parse::<u32>() else {
        let err =
            RequestError::Header(HeaderError::InvalidValue(name.to_owned(), value.to_owned()));
        return plain(req, 400, err.to_string());
    };
    match mmds.generate_token(ttl) {
        Ok(token) => {
            let mut r = plain(req, 200, token);
            r.custom_headers.push((name.to_owned(), ttl.to_string()));
            r
        }
        Err(e) => plain(req, 400, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::http::parse_request;

    fn mmds(clock: &ManualClock) -> Mmds {
        let mut m = Mmds::new(51200).unwrap();
        m.set_token_clock(Arc::new(clock.clone()));
        m.put(json!({
            "name": {"first": "John", "second": "Doe"},
            "age": 43,
            "phones": {"home": {"RO": "+401234567", "UK": "+441234567"}, "mobile": "+442345678"}
        }))
        .unwrap();
        m
    }

    fn ask(m: &mut Mmds, metrics: &MmdsMetrics, raw: &str) -> (u16, String, MediaType) {
        let req = parse_request(raw.as_bytes()).unwrap();
        let r = respond(m, &req, metrics);
        (r.status, String::from_utf8(r.body).unwrap(), r.content_type)
    }

    #[test]
    fn v1_get() {
        let clock = ManualClock::new(0);
        let mut m = mmds(&clock);
        let metrics = MmdsMetrics::default();
        let (s, b, ct) = ask(
            &mut m,
            &metrics,
            "GET http://169.254.169.254/ HTTP/1.0\r\nAccept: application/json\r\n\r\n",
        );
        assert_eq!((s, ct), (200, MediaType::ApplicationJson));
        assert_eq!(
            b,
            r#"{"age":43,"name":{"first":"John","second":"Doe"},"phones":{"home":{"RO":"+401234567","UK":"+441234567"},"mobile":"+442345678"}}"#
        );
        let (s, b, ct) = ask(
            &mut m,
            &metrics,
            "GET http://169.254.169.254/ HTTP/1.0\r\n\r\n",
        );
        assert_eq!(
            (s, b.as_str(), ct),
            (200, "age\nname/\nphones/", MediaType::PlainText)
        );
        assert_eq!(metrics.snapshot().rx_no_token, 2);
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "GET /phones//home///UK HTTP/1.1\r\nX-metadata-token: bogus\r\n\r\n",
        );
        assert_eq!((s, b.as_str()), (200, "+441234567"));
        assert_eq!(metrics.snapshot().rx_invalid_token, 1);
        let (s, b, _) = ask(&mut m, &metrics, "GET /age HTTP/1.1\r\n\r\n");
        assert_eq!(
            (s, b.as_str()),
            (
                501,
                "Cannot retrieve value. The value has an unsupported type."
            )
        );
        let (s, b, ct) = ask(&mut m, &metrics, "GET /a//b HTTP/1.1\r\n\r\n");
        assert_eq!(
            (s, b.as_str(), ct),
            (404, "Resource not found: /a//b.", MediaType::PlainText)
        );
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "GET http://169.254.169.254 HTTP/1.1\r\n\r\n",
        );
        assert_eq!((s, b.as_str()), (400, "Invalid URI."));
        let req = parse_request(b"PATCH / HTTP/1.1\r\n\r\n").unwrap();
        let r = respond(&mut m, &req, &metrics);
        assert_eq!((r.status, r.allow_get_put), (405, true));
        assert_eq!(r.body, texts::METHOD_NOT_ALLOWED.as_bytes());
    }

    #[test]
    fn v2_tokens() {
        let clock = ManualClock::new(10_000);
        let mut m = mmds(&clock);
        m.set_version(MmdsVersion::V2);
        let metrics = MmdsMetrics::default();
        let (s, b, _) = ask(&mut m, &metrics, "GET / HTTP/1.1\r\n\r\n");
        assert_eq!((s, b.as_str()), (401, texts::NO_TOKEN));
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: nope\r\n\r\n",
        );
        assert_eq!((s, b.as_str()), (401, texts::INVALID_TOKEN));
        assert_eq!(metrics.snapshot().rx_no_token, 1);
        assert_eq!(metrics.snapshot().rx_invalid_token, 1);

        let req = parse_request(
            b"PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n",
        )
        .unwrap();
        let r = respond(&mut m, &req, &metrics);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.custom_headers,
            vec![("X-metadata-token-ttl-seconds".to_owned(), "60".to_owned())]
        );
        let token = String::from_utf8(r.body).unwrap();
        let get = format!("GET /name/first HTTP/1.1\r\nX-metadata-token: {token}\r\n\r\n");
        assert_eq!(ask(&mut m, &metrics, &get).0, 200);
        clock.advance(60_000);
        assert_eq!(ask(&mut m, &metrics, &get).1, texts::INVALID_TOKEN);

        let (s, b, _) = ask(&mut m, &metrics, "PUT /latest/api/token HTTP/1.1\r\n\r\n");
        assert_eq!((s, b.as_str()), (400, texts::NO_TTL));
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n",
        );
        assert_eq!(
            (s, b.as_str()),
            (
                400,
                "Invalid time to live value provided for token: 0. Please provide a value between 1 and 21600."
            )
        );
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: x\r\n\r\n",
        );
        assert_eq!(
            (s, b.as_str()),
            (
                400,
                "Invalid header. Reason: Invalid value. Key:X-aws-ec2-metadata-token-ttl-seconds; Value:x"
            )
        );
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "PUT /latest/api/token HTTP/1.1\r\nX-fOrWaRdEd-FoR: 1.2.3.4\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n",
        );
        assert_eq!(
            (s, b.as_str()),
            (
                400,
                "Invalid header. Reason: Unsupported header name. Key: X-fOrWaRdEd-FoR"
            )
        );
        let (s, b, _) = ask(
            &mut m,
            &metrics,
            "PUT /token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n",
        );
        assert_eq!((s, b.as_str()), (404, "Resource not found: /token."));
        let (s, _, _) = ask(
            &mut m,
            &metrics,
            "PUT //latest//api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 5\r\n\r\n",
        );
        assert_eq!(s, 200);
    }

    #[test]
    fn imds_compat_ignores_accept_but_keeps_content_type() {
        let clock = ManualClock::new(0);
        let mut m = mmds(&clock);
        m.set_imds_compat(true);
        let metrics = MmdsMetrics::default();
        let (s, b, ct) = ask(
            &mut m,
            &metrics,
            "GET /name HTTP/1.1\r\nAccept: application/json\r\n\r\n",
        );
        assert_eq!(
            (s, b.as_str(), ct),
            (200, "first\nsecond", MediaType::ApplicationJson)
        );
    }
}
