//! The answers hyper makes on its own to an HTTP/1 request it cannot parse, recast in the JSON
//! error shape every other refusal has.
//!
//! hyper answers a malformed request line or header (`400`), a request target too long
//! (`414`) or a request head over its buffer (`431`) itself, before any of Tally's code sees
//! the request, with an empty body, and then closes the connection. It offers no hook for
//! that answer, so the connection's writes are watched instead: a write that is a whole
//! response head with one of those statuses, `content-length: 0` and no `content-type` is
//! one of hyper's (every answer Tally makes has a JSON body), and is replaced by the same
//! status with an error body. Where hyper's answer shares a write with the end of the answer
//! before it (a client that pipelines a malformed request), it goes out as hyper wrote it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tally_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest HTTP/1 request head hyper reads (its read buffer); a larger one is answered
/// `431`.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// A connection whose writes are watched for hyper's own refusals.
pub struct Recast<I> {
    inner: I,
    /// A replacement being written, and how many bytes of hyper's it stands for.
    pending: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    stands_for: usize,
}

impl<I> Recast<I> {
    pub fn new(inner: I) -> Self {
        Self { inner, pending: None }
    }
}

/// What hyper's refusal with `status` means, in Tally's words.
fn refusal(status: u16) -> Option<(ErrorCode, String)> {
    match status {
        400 => Some((
            ErrorCode::InvalidArgument,
            "the request is not valid HTTP/1.1: its request line or a header could not be parsed".to_owned(),
        )),
        414 => Some((ErrorCode::OutOfRange, "the request target (path and query) is too long".to_owned())),
        431 => Some((
            ErrorCode::OutOfRange,
            format!("the request head (request line and headers) is larger than {MAX_HEAD_BYTES} bytes"),
        )),
        _ => None,
    }
}

/// hyper's refusals are a status line and two or three short headers.
const MAX_REFUSAL_BYTES: usize = 512;

/// The JSON-shaped answer for `written`, if it is one of hyper's own refusals.
fn recast(written: &[u8]) -> Option<Vec<u8>> {
    // Every write passes here: most are told apart by their length or first bytes.
    if written.len() > MAX_REFUSAL_BYTES || !written.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(written).ok()?.strip_suffix("\r\n\r\n")?;
    let status: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let (code, message) = refusal(status)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut headers = Vec::new();
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
        match name.as_str() {
            "content-type" => return None,
            "content-length" if line.split(':').nth(1).map(str::trim) != Some("0") => return None,
            "content-length" | "connection" => {}
            _ => headers.push(line),
        }
    }
    let body = serde_json::json!({"error": {"code": code.as_str(), "message": message}}).to_string();
    let mut answer = format!("{status_line}\r\n");
    for line in headers {
        answer.push_str(line);
        answer.push_str("\r\n");
    }
    answer.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    metrics::counter!("tally_http_parse_refusals_total", "code" => code.as_str()).increment(1);
    Some(answer.into_bytes())
}

impl<I: AsyncRead + Unpin> AsyncRead for Recast<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Recast<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match recast(buf) {
                Some(bytes) => this.pending = Some(Replacement { bytes, written: 0, stands_for: buf.len() }),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // hyper repeats a write that was not taken, so the replacement is finished first and
        // then reported as hyper's bytes written.
        while let Some(replacement) = this.pending.as_mut() {
            if replacement.written == replacement.bytes.len() {
                let stands_for = replacement.stands_for;
                this.pending = None;
                return Poll::Ready(Ok(stands_for));
            }
            match Pin::new(&mut this.inner).poll_write(cx, &replacement.bytes[replacement.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => replacement.written += n,
                Poll::Ready(Err(e)) => {
                    this.pending = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands each answer over in one buffer, head included, which is
    // what `recast` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_refusals_are_recast_and_tallys_answers_are_not() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 14:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(recast(hyper).expect("recast")).expect("utf-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert!(head.contains("\r\ndate: Mon, 30 Nov 2026 14:00:00 GMT"), "{head}");
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(body["error"]["code"], "OUT_OF_RANGE", "{body}");
        for own in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(recast(own).is_none(), "{}", String::from_utf8_lossy(own));
        }
    }
}
