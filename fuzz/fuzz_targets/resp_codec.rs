//! Feeds arbitrary bytes to the RESP request parser, whole and split at every chunk boundary a slow peer could
//! produce, and checks what a server relies on: no panic; a request is never reported longer than the buffer; a
//! prefix of a complete request is never an error and never a different request, whether parsed afresh or resumed
//! from the state the shorter prefixes left (as a connection does, read by read), and resuming ends in the same
//! request; and every parsed request re-encodes to bytes that parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spool_resp::frame::{self, Frame, Limits, Partial, Proto};

const LIMITS: Limits = Limits {
    max_bulk_bytes: 512,
    max_array_len: 64,
    max_inline_bytes: 256,
    max_request_bytes: 4096,
};

/// Parses `buf` as a first look at it.
fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, frame::ProtocolError> {
    frame::parse(buf, limits, &mut Partial::default())
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, used))) = parse(data, &LIMITS) else {
        return;
    };
    assert!(used <= data.len());
    let mut carried = Partial::default();
    for cut in 0..used {
        for (how, parsed) in [
            ("afresh", parse(&data[..cut], &LIMITS)),
            ("resumed", frame::parse(&data[..cut], &LIMITS, &mut carried)),
        ] {
            match parsed {
                Ok(None) => {}
                // A prefix must never yield a complete request: the whole's request is the first one in the data.
                Ok(Some((other, n))) => {
                    panic!("prefix of {cut} bytes parsed {how} as {other:?} ({n} bytes), whole is {frame:?}")
                }
                Err(e) => panic!("prefix of {cut} bytes failed {how} with {e} but the whole parses"),
            }
        }
    }
    assert_eq!(
        frame::parse(&data[..used], &LIMITS, &mut carried),
        Ok(Some((frame.clone(), used))),
        "resuming ends in the same request"
    );
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
