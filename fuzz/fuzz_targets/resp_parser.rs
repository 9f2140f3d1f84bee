//! The RESP request parser on arbitrary bytes, fed in arbitrary chunks: it must never panic,
//! never hand out a request over its limits, and never keep more than a request's worth
//! buffered without either parsing it or refusing it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tally_server::resp::parser::{Limits, parse};

const LIMITS: Limits = Limits { max_args: 16, max_bulk: 64, max_request: 512 };

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, as reads of any size may arrive.
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 32) + 1;
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse(&mut buf, LIMITS) {
                Ok(Some(args)) => {
                    assert!(args.len() <= LIMITS.max_args, "{} arguments", args.len());
                    assert!(args.iter().all(|a| a.len() <= LIMITS.max_bulk), "an argument over the limit");
                }
                Ok(None) => break,
                // A protocol error closes the connection: nothing more is read.
                Err(_) => return,
            }
        }
        // Incomplete data kept waiting never exceeds what one request may announce (plus
        // the header line being read).
        assert!(buf.len() <= LIMITS.max_request + LIMITS.max_bulk + 64, "{} bytes buffered", buf.len());
    }
});
