//! Replies and their encoding in RESP2 or RESP3, chosen per connection by `HELLO`.

use bytes::{BufMut, BytesMut};

/// A reply value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(&'static str),
    /// `-CODE message`
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$n\r\nbytes`
    Bulk(Vec<u8>),
    /// RESP2 `$-1`, RESP3 `_`
    Null,
    /// `*n`
    Array(Vec<Reply>),
    /// RESP3 `%n`; a flat array of key, value, ... in RESP2
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Self {
        Self::Bulk(s.into().into_bytes())
    }

    /// Encodes the reply in protocol version `resp3 ? 3 : 2`.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => {
                // An error is one line: newlines in a message would break the framing.
                let flat: String = e.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
                line(out, b'-', flat.as_bytes());
            }
            Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.put_slice(b"_\r\n"),
            Reply::Null => out.put_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                items.iter().for_each(|i| i.encode(resp3, out));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (k, v) in pairs {
                    k.encode(resp3, out);
                    v.encode(resp3, out);
                }
            }
        }
    }
}

fn line(out: &mut BytesMut, kind: u8, body: &[u8]) {
    out.put_u8(kind);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, resp3: bool) -> String {
        let mut out = BytesMut::new();
        r.encode(resp3, &mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    #[test]
    fn encodes_both_protocol_versions() {
        assert_eq!(enc(&Reply::Integer(-3), false), ":-3\r\n");
        assert_eq!(enc(&Reply::text("42"), false), "$2\r\n42\r\n");
        assert_eq!(enc(&Reply::Null, false), "$-1\r\n");
        assert_eq!(enc(&Reply::Null, true), "_\r\n");
        let map = Reply::Map(vec![(Reply::text("a"), Reply::Integer(1))]);
        assert_eq!(enc(&map, false), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, true), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&Reply::Error("ERR a\r\nb".into()), false), "-ERR a  b\r\n");
    }
}
