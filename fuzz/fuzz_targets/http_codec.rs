//! The API's HTTP/1.1 codec: request heads of any bytes and any payload limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squib_api::server::http1::{HeadParse, parse_head};

fuzz_target!(|data: &[u8]| {
    let limit = usize::from(data.first().copied().unwrap_or(0)) * 1024;
    if let Ok(HeadParse::Complete(head, used)) =
        parse_head(data.get(1..).unwrap_or_default(), limit)
    {
        assert!(used <= data.len());
        assert!(head.content_length <= limit);
    }
});
