//! Request framing: RESP arrays of bulk strings, and inline commands, with limits checked
//! before anything is buffered.
//!
//! A request is either `*<n>\r\n` followed by `n` bulk strings `$<len>\r\n<bytes>\r\n`, or an
//! inline line of words (`PING\r\n`), which is what `telnet` and hand-typed input send.
//!
//! Why not the `redis-protocol` crate: it decodes whole frames from a buffer and answers
//! "incomplete" until the bytes are there, so a header `$2000000000` or `*1000000` would be
//! buffered before anything could refuse it. This door refuses such a header when it reads
//! it (the argument count and each length against [`Limits`]), which is what lets a client's
//! request never take more memory than the limits allow; requests are arrays of bulk
//! strings only, about a hundred lines to frame.

use bytes::{Buf, Bytes, BytesMut};

/// Bounds on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most arguments (the command name included).
    pub max_args: usize,
    /// Longest bulk string, and longest inline line, in bytes.
    pub max_bulk: usize,
    /// Most bytes one whole request may announce, so that a connection never buffers more
    /// than this for an incomplete request.
    pub max_request: usize,
}

/// A request that can never become valid; the connection answers it and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length or count that is not a number.
    #[error("Protocol error: invalid {what} {found:?}")]
    BadLength {
        /// `multibulk length` or `bulk length`.
        what: &'static str,
        /// The text found.
        found: String,
    },
    /// Too many arguments.
    #[error("Protocol error: {count} arguments is more than the limit of {max}")]
    TooManyArgs {
        /// Arguments announced.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A bulk string or inline line over the limit.
    #[error("Protocol error: a {len}-byte argument is more than the limit of {max} bytes")]
    TooLong {
        /// Bytes announced (or seen).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Something other than `$` where a bulk string must start.
    #[error("Protocol error: expected '$', got {0:?}")]
    ExpectedBulk(char),
    /// A request whose arguments add up to more than the limit.
    #[error("Protocol error: a request of more than {max} bytes")]
    RequestTooLarge {
        /// The limit.
        max: usize,
    },
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
}

/// Takes one complete request off the front of `buf`, if there is one.
///
/// `Ok(None)` means more bytes are needed; `buf` is left untouched until a whole request is
/// there, so a request split across reads is parsed once it is complete.
pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// Finds the end of the line starting at `from`; errors if the line is longer than `max`.
fn line_end(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from..buf.len().min(from + max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(at) => Ok(Some(from + at)),
        None if window.len() >= max + 2 => Err(ProtocolError::TooLong { len: window.len(), max }),
        None => Ok(None),
    }
}

fn number(bytes: &[u8], what: &'static str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError::BadLength { what, found: String::from_utf8_lossy(bytes).into_owned() })
}

fn parse_array(buf: &mut BytesMut, limits: Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // A header line is a handful of digits; 32 bytes is generous.
    let Some(end) = line_end(buf, 1, 32)? else { return Ok(None) };
    let count = number(&buf[1..end], "multibulk length")?;
    if count <= 0 {
        buf.advance(end + 2);
        return Ok(Some(Vec::new()));
    }
    let count = count as usize;
    if count > limits.max_args {
        return Err(ProtocolError::TooManyArgs { count, max: limits.max_args });
    }
    // First pass: check that every argument is complete, without copying.
    let mut at = end + 2;
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        let Some(&first) = buf.get(at) else { return Ok(None) };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first as char));
        }
        let Some(end) = line_end(buf, at + 1, 32)? else { return Ok(None) };
        let len = number(&buf[at + 1..end], "bulk length")?;
        let len = usize::try_from(len)
            .map_err(|_| ProtocolError::BadLength { what: "bulk length", found: len.to_string() })?;
        if len > limits.max_bulk {
            return Err(ProtocolError::TooLong { len, max: limits.max_bulk });
        }
        let start = end + 2;
        if start + len > limits.max_request {
            return Err(ProtocolError::RequestTooLarge { max: limits.max_request });
        }
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        spans.push((start, len));
        at = start + len + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Some(spans.into_iter().map(|(start, len)| frame.slice(start..start + len)).collect()))
}

fn parse_inline(buf: &mut BytesMut, limits: Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(end) = line_end(buf, 0, limits.max_bulk)? else { return Ok(None) };
    let line = buf.split_to(end + 2).freeze();
    let words: Vec<Bytes> = line[..end]
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| line.slice_ref(w))
        .collect();
    if words.len() > limits.max_args {
        return Err(ProtocolError::TooManyArgs { count: words.len(), max: limits.max_args });
    }
    Ok(Some(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_args: 4, max_bulk: 16, max_request: 48 };

    fn parse_all(input: &[u8]) -> (Vec<Vec<Bytes>>, Result<(), ProtocolError>, usize) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match parse(&mut buf, LIMITS) {
                Ok(Some(req)) => out.push(req),
                Ok(None) => return (out, Ok(()), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    #[test]
    fn pipelined_arrays_and_inline_commands_parse_in_order() {
        let (reqs, result, left) = parse_all(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\nPING\r\n*1\r\n$3\r\nGET");
        assert_eq!(result, Ok(()));
        assert_eq!(reqs, vec![vec![Bytes::from("INCR"), Bytes::from("k")], vec![Bytes::from("PING")]]);
        assert_eq!(left, 11, "the incomplete request stays buffered");
    }

    #[test]
    fn a_request_split_at_any_byte_parses_once_complete() {
        let whole = b"*3\r\n$6\r\nINCRBY\r\n$3\r\na:b\r\n$2\r\n-5\r\n";
        for split in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..split]);
            assert_eq!(parse(&mut buf, LIMITS), Ok(None), "split at {split}");
            buf.extend_from_slice(&whole[split..]);
            let req = parse(&mut buf, LIMITS).expect("valid").expect("complete");
            assert_eq!(req.len(), 3);
        }
    }

    #[test]
    fn limits_are_checked_before_the_data_arrives() {
        // Only the headers are sent: the announced sizes alone are refused.
        let (_, result, _) = parse_all(b"*5\r\n");
        assert_eq!(result, Err(ProtocolError::TooManyArgs { count: 5, max: 4 }));
        let (_, result, _) = parse_all(b"*1\r\n$2000000000\r\n");
        assert_eq!(result, Err(ProtocolError::TooLong { len: 2_000_000_000, max: 16 }));
        let (_, result, _) = parse_all(&[b'x'; 40]);
        assert!(matches!(result, Err(ProtocolError::TooLong { .. })));
        // Four arguments of 16 bytes each are each within bounds, but not together.
        let (_, result, _) =
            parse_all(b"*4\r\n$16\r\n0123456789abcdef\r\n$16\r\n0123456789abcdef\r\n$16\r\n");
        assert_eq!(result, Err(ProtocolError::RequestTooLarge { max: 48 }));
    }

    #[test]
    fn malformed_headers_are_protocol_errors() {
        assert!(matches!(parse_all(b"*x\r\n").1, Err(ProtocolError::BadLength { .. })));
        assert!(matches!(parse_all(b"*1\r\n$-3\r\n").1, Err(ProtocolError::BadLength { .. })));
        assert_eq!(parse_all(b"*1\r\n:3\r\n").1, Err(ProtocolError::ExpectedBulk(':')));
        assert_eq!(parse_all(b"*1\r\n$1\r\nab\r\n").1, Err(ProtocolError::MissingCrlf));
    }
}
