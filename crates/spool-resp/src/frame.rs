//! The RESP value and its wire form: [`parse`] reads one client request from the front of a buffer, [`Frame::encode`]
//! writes a reply in RESP2 or RESP3.
//!
//! Parsing is written for a server facing untrusted peers. Every length is checked against [`Limits`] *before* any
//! memory is reserved for it, so `*2147483647\r\n` costs nothing, and a request can never make the read buffer grow
//! past [`Limits::max_request_bytes`] plus the framing of [`Limits::max_array_len`] arguments. A request that has
//! not fully arrived is the normal outcome `Ok(None)`, not an error: the caller reads more and tries again, carrying a
//! [`Partial`] so that the bytes already parsed are not parsed again.

use bytes::Bytes;

/// A RESP value. Requests only ever produce `Simple`, `Integer`, `Bulk` and `Array`; the other variants are replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(String),
    /// `-CODE message`: the first word is the error's kind.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`: binary-safe.
    Bulk(Bytes),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// A missing array (a blocking pop that timed out): `*-1` in RESP2, `_` in RESP3.
    NullArray,
    /// `*n`
    Array(Vec<Frame>),
    /// `%n` in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// `~n` in RESP3; an array in RESP2.
    Set(Vec<Frame>),
    /// `,1.5` in RESP3; a bulk string in RESP2.
    Double(f64),
    /// `#t` in RESP3; `:1`/`:0` in RESP2.
    Boolean(bool),
    /// `>n` in RESP3 (out-of-band data such as pub/sub messages); an array in RESP2.
    Push(Vec<Frame>),
}

/// The protocol version a connection speaks; it changes only with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// RESP2, what every connection starts with.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Proto {
    /// The version number shown by `HELLO`.
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// Size limits on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string, in bytes.
    pub max_bulk_bytes: usize,
    /// Most elements in one array.
    pub max_array_len: usize,
    /// Longest inline command line (and simple string), in bytes.
    pub max_inline_bytes: usize,
    /// Most bytes one request may declare in all: the cap on what one connection can make the server buffer.
    pub max_request_bytes: usize,
}

/// A request the server cannot make sense of; the connection is answered `-ERR Protocol error: …` and closed, since
/// after a framing error there is no telling where the next request starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol(msg: impl Into<String>) -> ProtocolError {
    ProtocolError(msg.into())
}

/// The longest `*n` / `$n` / `:n` header line: a sign, 19 digits and some slack. Anything longer is garbage, and
/// refusing it early stops a peer from filling the buffer with an endless number.
const MAX_HEADER_LINE: usize = 32;

/// A request part-way through arriving: the arguments read so far and where the next one starts, kept between
/// reads so that each byte of a request is looked at once. (Parsing from the start on every read made a request that
/// arrives in many small reads cost time quadratic in its size, copying every argument again each time.)
#[derive(Debug, Default)]
pub struct Partial {
    /// The multibulk header has been read: `remaining` more arguments follow.
    started: bool,
    items: Vec<Frame>,
    remaining: usize,
    /// Where the next argument starts (a multibulk request), or how far an inline line was searched for its end.
    pos: usize,
    /// Bytes of the arguments read so far, checked against `max_request_bytes`.
    declared: usize,
}

/// Parses one request from the front of `buf`: a multibulk array of bulk strings (`*2\r\n$4\r\nPING\r\n…`) or, when
/// the first byte is not `*`, an inline command line (`PING hello\r\n`), split on spaces with Redis's quoting rules.
/// Returns the request and the bytes it took, `Ok(None)` when it is not complete yet, or an error when it can never
/// be valid. `partial` carries what was parsed of an incomplete request to the next call, which must see the same
/// bytes at the front of `buf` (more behind them); it is reset when a request or an error is returned.
///
/// As in Redis, the arguments of a multibulk request must be bulk strings: no nested arrays, simple strings or
/// integers, so that a request is at most `max_array_len` arguments of at most `max_request_bytes` in all, plus their
/// framing. An empty request (a blank inline line, `*0`, `*-1`) comes back as an empty array, which callers skip.
pub fn parse(buf: &[u8], limits: &Limits, partial: &mut Partial) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let parsed = match buf.first() {
        None => return Ok(None),
        Some(b'*') => multibulk(buf, limits, partial),
        Some(_) => parse_inline(buf, limits, partial),
    };
    if !matches!(parsed, Ok(None)) {
        *partial = Partial::default();
    }
    parsed
}

fn multibulk(buf: &[u8], limits: &Limits, partial: &mut Partial) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let mut cursor = Cursor { buf, pos: partial.pos };
    if !partial.started {
        cursor.pos = 1;
        let Some(len) = cursor.number("multibulk length")? else {
            return Ok(None);
        };
        // `*-1` is a null array; as a request Redis takes it (and `*0`) as nothing to do.
        if len == -1 {
            return Ok(Some((Frame::Array(Vec::new()), cursor.pos)));
        }
        let len = usize::try_from(len).map_err(|_| protocol("invalid multibulk length"))?;
        if len > limits.max_array_len {
            return Err(protocol(format!(
                "multibulk length {len} exceeds the limit of {}",
                limits.max_array_len
            )));
        }
        // Reserve only for what has arrived: each argument takes at least 6 bytes (`$0\r\n\r\n`), so a declared
        // length the buffer cannot hold yet costs nothing until its arguments come.
        partial.items = Vec::with_capacity(len.min((buf.len() - cursor.pos) / 6));
        partial.remaining = len;
        partial.started = true;
        partial.pos = cursor.pos;
    }
    while partial.remaining > 0 {
        let Some(item) = cursor.bulk(limits, &mut partial.declared)? else {
            return Ok(None);
        };
        partial.items.push(item);
        partial.remaining -= 1;
        partial.pos = cursor.pos;
    }
    Ok(Some((Frame::Array(std::mem::take(&mut partial.items)), cursor.pos)))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// The next line without its CRLF, or `None` if its end has not arrived. `max` bounds how long it may be.
    fn line(&mut self, max: usize, what: &str) -> Result<Option<&[u8]>, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let window = &rest[..rest.len().min(max + 2)];
        match window.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                self.pos += end + 2;
                Ok(Some(&rest[..end]))
            }
            None if window.len() >= max + 2 => Err(protocol(format!("too big {what}"))),
            None => Ok(None),
        }
    }

    fn number(&mut self, what: &str) -> Result<Option<i64>, ProtocolError> {
        let Some(line) = self.line(MAX_HEADER_LINE, what)? else {
            return Ok(None);
        };
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| protocol(format!("invalid {what}")))
    }

    /// One argument: a bulk string, checked against the limits before its bytes arrive. `declared` (the bytes of
    /// the arguments before it) grows only once the argument is whole, since an incomplete one is parsed again.
    fn bulk(&mut self, limits: &Limits, declared: &mut usize) -> Result<Option<Frame>, ProtocolError> {
        match self.buf.get(self.pos) {
            None => return Ok(None),
            Some(b'$') => self.pos += 1,
            Some(&other) => {
                return Err(protocol(format!(
                    "expected '$', got '{}'",
                    char::from(other).escape_default()
                )))
            }
        }
        let Some(len) = self.number("bulk length")? else {
            return Ok(None);
        };
        let len = usize::try_from(len).map_err(|_| protocol("invalid bulk length"))?;
        if len > limits.max_bulk_bytes {
            return Err(protocol(format!(
                "bulk length {len} exceeds the limit of {} bytes",
                limits.max_bulk_bytes
            )));
        }
        if declared.saturating_add(len) > limits.max_request_bytes {
            return Err(protocol(format!(
                "request exceeds the limit of {} bytes",
                limits.max_request_bytes
            )));
        }
        let end = self.pos + len;
        if self.buf.len() < end + 2 {
            return Ok(None);
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return Err(protocol("bulk string not terminated by CRLF"));
        }
        let data = Bytes::copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end + 2;
        *declared += len;
        Ok(Some(Frame::Bulk(data)))
    }
}

/// An inline command: one line, ended by `\n` (with or without `\r`, since people type into `nc` and `telnet`).
fn parse_inline(buf: &[u8], limits: &Limits, partial: &mut Partial) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let window = &buf[..buf.len().min(limits.max_inline_bytes + 1)];
    // The bytes before `partial.pos` were searched already.
    let Some(newline) = window[partial.pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| partial.pos + i)
    else {
        if window.len() > limits.max_inline_bytes {
            return Err(protocol("too big inline request"));
        }
        partial.pos = window.len();
        return Ok(None);
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line).ok_or_else(|| protocol("unbalanced quotes in request"))?;
    if args.len() > limits.max_array_len {
        return Err(protocol("too many arguments in inline request"));
    }
    Ok(Some((
        Frame::Array(args.into_iter().map(|a| Frame::Bulk(a.into())).collect()),
        newline + 1,
    )))
}

/// Splits an inline line as Redis's `sdssplitargs` does: spaces separate arguments; `"…"` allows escapes (`\n`,
/// `\r`, `\t`, `\b`, `\a`, `\\`, `\"`, `\xHH`); `'…'` is literal except `\'`. A closing quote must be followed by a
/// space or the end. Returns `None` for unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        match line[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    match *line.get(i)? {
                        b'\\' => match escape(line, i, quote) {
                            Some((byte, len)) => {
                                arg.push(byte);
                                i += len;
                            }
                            None => {
                                arg.push(b'\\');
                                i += 1;
                            }
                        },
                        byte if byte == quote => {
                            i += 1;
                            break;
                        }
                        other => {
                            arg.push(other);
                            i += 1;
                        }
                    }
                }
                if line.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    return None;
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

/// The byte a backslash sequence at `line[i]` stands for inside `quote`s, and the sequence's length; `None` when the
/// backslash is literal. In `'…'` only `\'` is an escape; in `"…"` also `\xHH` and the C escapes, and any other
/// escaped byte stands for itself.
fn escape(line: &[u8], i: usize, quote: u8) -> Option<(u8, usize)> {
    let next = *line.get(i + 1)?;
    if quote == b'\'' {
        return (next == b'\'').then_some((b'\'', 2));
    }
    let hex = line.get(i + 2..i + 4).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
    if let (b'x', Some(hex)) = (next, hex) {
        let hex = std::str::from_utf8(hex).ok()?;
        return Some((u8::from_str_radix(hex, 16).ok()?, 4));
    }
    let byte = match next {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 8,
        b'a' => 7,
        other => other,
    };
    Some((byte, 2))
}

impl Frame {
    /// A simple string reply.
    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    /// A bulk string reply from text.
    pub fn text(s: impl Into<String>) -> Frame {
        Frame::Bulk(Bytes::from(s.into()))
    }

    /// Appends the reply's wire form for `proto` to `out`.
    pub fn encode(&self, proto: Proto, out: &mut Vec<u8>) {
        let resp3 = proto == Proto::Resp3;
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            // A reply line must stay one line, whatever a message contains.
            Frame::Error(s) => line(out, b'-', s.replace(['\r', '\n'], " ").as_bytes()),
            Frame::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(data) => {
                line(out, b'$', data.len().to_string().as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(items) => aggregate(out, b'*', items, proto),
            Frame::Set(items) => aggregate(out, if resp3 { b'~' } else { b'*' }, items, proto),
            Frame::Push(items) => aggregate(out, if resp3 { b'>' } else { b'*' }, items, proto),
            Frame::Map(pairs) => {
                let (kind, len) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                line(out, kind, len.to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Double(d) => {
                let text = if d.is_infinite() {
                    if *d > 0.0 { "inf" } else { "-inf" }.to_string()
                } else if d.is_nan() {
                    "nan".to_string()
                } else {
                    d.to_string()
                };
                if resp3 {
                    line(out, b',', text.as_bytes());
                } else {
                    Frame::text(text).encode(proto, out);
                }
            }
            Frame::Boolean(b) if resp3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::Boolean(b) => Frame::Integer(i64::from(*b)).encode(proto, out),
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

fn aggregate(out: &mut Vec<u8>, kind: u8, items: &[Frame], proto: Proto) {
    line(out, kind, items.len().to_string().as_bytes());
    for item in items {
        item.encode(proto, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk_bytes: 16,
        max_array_len: 4,
        max_inline_bytes: 32,
        max_request_bytes: 40,
    };

    /// Parses `buf` as a first look at it.
    fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, ProtocolError> {
        super::parse(buf, limits, &mut Partial::default())
    }

    fn bulks(args: &[&str]) -> Frame {
        Frame::Array(args.iter().map(|a| Frame::Bulk(Bytes::from(a.to_string()))).collect())
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let wire = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
        for end in 0..wire.len() {
            assert_eq!(parse(&wire[..end], &LIMITS), Ok(None), "prefix of {end} bytes");
        }
        assert_eq!(parse(wire, &LIMITS), Ok(Some((bulks(&["ECHO", "hello"]), wire.len()))));
    }

    #[test]
    fn a_request_read_in_pieces_is_parsed_once() {
        let wire = b"*3\r\n$4\r\nECHO\r\n$5\r\nhello\r\n$0\r\n\r\nPING\r\n";
        let request = wire.len() - 6;
        let mut partial = Partial::default();
        for end in 0..request {
            assert_eq!(
                super::parse(&wire[..end], &LIMITS, &mut partial),
                Ok(None),
                "prefix of {end} bytes"
            );
        }
        // Each call resumes where the last stopped: arguments already read are not read again.
        assert_eq!(Frame::Array(partial.items.clone()), bulks(&["ECHO", "hello"]));
        assert_eq!(
            super::parse(&wire[..request], &LIMITS, &mut partial),
            Ok(Some((bulks(&["ECHO", "hello", ""]), request)))
        );
        assert!(!partial.started, "a whole request resets what is carried over");
        for end in request + 1..wire.len() {
            assert_eq!(super::parse(&wire[request..end], &LIMITS, &mut partial), Ok(None));
        }
        assert_eq!(partial.pos, 5, "an inline line is searched for its end once");
        assert_eq!(
            super::parse(&wire[request..], &LIMITS, &mut partial),
            Ok(Some((bulks(&["PING"]), 6)))
        );
    }

    proptest::proptest! {
        /// A connection reads a request in whatever pieces the network gives; resumed read by read, the parser
        /// reaches the request it would read from the whole, and nothing before it.
        #[test]
        fn any_split_of_a_request_parses_as_the_whole(
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 1..4),
            cuts in proptest::collection::vec(0usize..100, 0..6),
        ) {
            let mut wire = format!("*{}\r\n", args.len()).into_bytes();
            for arg in &args {
                wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                wire.extend_from_slice(arg);
                wire.extend_from_slice(b"\r\n");
            }
            let whole = Frame::Array(args.iter().map(|a| Frame::Bulk(Bytes::from(a.clone()))).collect());
            let limits = Limits { max_bulk_bytes: 64, max_array_len: 8, max_inline_bytes: 64, max_request_bytes: 256 };
            let mut ends: Vec<usize> = cuts.into_iter().map(|c| c % wire.len()).collect();
            ends.sort_unstable();
            let mut partial = Partial::default();
            for end in ends {
                proptest::prop_assert_eq!(super::parse(&wire[..end], &limits, &mut partial), Ok(None));
            }
            proptest::prop_assert_eq!(
                super::parse(&wire, &limits, &mut partial),
                Ok(Some((whole, wire.len())))
            );
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let wire = b"*1\r\n$4\r\nPING\r\nPING\r\n";
        let (first, used) = parse(wire, &LIMITS).unwrap().unwrap();
        assert_eq!(first, bulks(&["PING"]));
        assert_eq!(parse(&wire[used..], &LIMITS), Ok(Some((bulks(&["PING"]), 6))));
    }

    #[test]
    fn limits_are_enforced_before_the_data_arrives() {
        for (wire, expect) in [
            (&b"*2147483647\r\n"[..], "multibulk length 2147483647 exceeds"),
            (b"*1\r\n$17\r\n", "bulk length 17 exceeds"),
            (b"*-2\r\n", "invalid multibulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$x\r\n", "invalid bulk length"),
            (b"*1\r\n*1\r\n", "expected '$', got '*'"),
            (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
            (b"*1\r\n:1\r\n", "expected '$', got ':'"),
            (
                b"*3\r\n$16\r\n0123456789abcdef\r\n$16\r\n0123456789abcdef\r\n$16\r\n",
                "request exceeds",
            ),
            (b"*1\r\n!3\r\n", "expected '$', got '!'"),
            (b"*1\r\n$1\r\nab\r\n", "not terminated by CRLF"),
            (b"*11111111111111111111111111111111111", "too big multibulk length"),
        ] {
            let err = parse(wire, &LIMITS).unwrap_err();
            assert!(err.0.contains(expect), "{wire:?}: {err}");
        }
        let long_inline = vec![b'a'; 40];
        assert!(parse(&long_inline, &LIMITS).unwrap_err().0.contains("too big inline"));
    }

    #[test]
    fn inline_commands_follow_redis_quoting() {
        let (frame, used) = parse(b"SET  k \"a b\\x41\\n\" 'it\\'s'\r\nrest", &LIMITS)
            .unwrap()
            .unwrap();
        assert_eq!(frame, bulks(&["SET", "k", "a bA\n", "it's"]));
        assert_eq!(used, 28);
        assert_eq!(parse(b"PING\n", &LIMITS), Ok(Some((bulks(&["PING"]), 5))));
        assert_eq!(parse(b"\r\n", &LIMITS), Ok(Some((Frame::Array(vec![]), 2))));
        assert!(parse(b"ECHO \"open\r\n", &LIMITS).is_err());
        assert!(parse(b"ECHO \"a\"b\r\n", &LIMITS).is_err());
        // The edges of the two quoting styles: in '…' a backslash is literal unless it escapes a quote; in "…" an
        // escaped quote, a bad \x sequence (taken as "x" then literal text) and a backslash before the end.
        let (frame, _) = parse(b"ECHO 'a\\b' \"q\\\"q\" \"\\xZZ\"\r\n", &LIMITS)
            .unwrap()
            .unwrap();
        assert_eq!(frame, bulks(&["ECHO", "a\\b", "q\"q", "xZZ"]));
        assert!(parse(b"ECHO \"a\\\r\n", &LIMITS).is_err());
    }

    #[test]
    fn replies_take_the_form_of_the_protocol() {
        let reply = Frame::Map(vec![
            (Frame::text("proto"), Frame::Integer(3)),
            (Frame::text("gone"), Frame::Null),
            (Frame::text("ratio"), Frame::Double(1.5)),
            (Frame::text("flag"), Frame::Boolean(true)),
        ]);
        let mut v2 = Vec::new();
        reply.encode(Proto::Resp2, &mut v2);
        assert_eq!(
            v2,
            b"*8\r\n$5\r\nproto\r\n:3\r\n$4\r\ngone\r\n$-1\r\n$5\r\nratio\r\n$3\r\n1.5\r\n$4\r\nflag\r\n:1\r\n"
        );
        let mut v3 = Vec::new();
        reply.encode(Proto::Resp3, &mut v3);
        assert_eq!(
            v3,
            b"%4\r\n$5\r\nproto\r\n:3\r\n$4\r\ngone\r\n_\r\n$5\r\nratio\r\n,1.5\r\n$4\r\nflag\r\n#t\r\n"
        );
        let mut err = Vec::new();
        Frame::Error("ERR a\r\nb".into()).encode(Proto::Resp2, &mut err);
        assert_eq!(err, b"-ERR a  b\r\n");
    }
}
