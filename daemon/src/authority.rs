//! Accepting any `:authority` on the Unix socket.
//!
//! gRPC C-core clients (Python, C++, Ruby, PHP) and grpc-java send the socket path
//! (`/run/switchyard/switchyard.sock`) as `:authority` on a Unix socket. h2, the HTTP/2
//! layer under tonic, parses every request's authority as a URI authority while it
//! decodes the headers, and resets the stream with PROTOCOL_ERROR when a `/` is in it,
//! before tonic or any tower layer runs; h2 has no option to relax that (hyperium/h2
//! pull request 487 is still open). The authority means nothing on a Unix socket, so
//! this module rewrites it below h2: [`AuthorityFix`] wraps each accepted Unix
//! connection and re-encodes every header block the client sends, replacing an
//! authority that is not a valid URI authority with `localhost`.
//!
//! How: the client→server byte stream is parsed into HTTP/2 frames. Frames other than
//! HEADERS and CONTINUATION pass through as they arrive (DATA is never buffered). A
//! header block (HEADERS plus its CONTINUATIONs) is decoded with the client's HPACK
//! state and re-encoded as literals without indexing, so h2's decoder never adds to its
//! dynamic table and stays consistent whatever the client indexes. Padding is dropped;
//! priority fields are kept. Anything that is not HTTP/2 (no connection preface) passes
//! through untouched for h2 to refuse. The server→client direction is not touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::{Connected, UdsConnectInfo};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame every HTTP/2 peer must accept; re-encoded blocks are split at it.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this (all its frames together) closes the connection:
/// far above what any gRPC request carries, and it bounds what one client makes the
/// daemon buffer.
const MAX_BLOCK: usize = 256 << 10;
/// HPACK dynamic table size the server side allows (h2's default, never raised here).
const TABLE_SIZE: usize = 4096;
/// What replaces an authority h2 would refuse.
const REPLACEMENT: &[u8] = b"localhost";

enum Stage {
    /// Waiting for the 24-byte connection preface.
    Preface,
    /// Waiting for a 9-byte frame header.
    FrameHeader,
    /// Forwarding this many payload bytes of a frame that is not rewritten.
    Forward(usize),
    /// Collecting a HEADERS or CONTINUATION payload of this length.
    HeaderPayload {
        kind: u8,
        flags: u8,
        stream: u32,
        len: usize,
    },
    /// Not HTTP/2 (or given up on): everything passes through.
    Passthrough,
}

/// A header block whose HEADERS frame arrived without END_HEADERS.
struct Pending {
    stream: u32,
    /// Flags of the HEADERS frame (END_STREAM, PRIORITY), without PADDED.
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// A client connection whose header blocks are rewritten so any `:authority` passes h2.
pub struct AuthorityFix<S> {
    inner: S,
    stage: Stage,
    /// Bytes read from the client and not yet processed.
    raw: Vec<u8>,
    /// Processed bytes not yet handed to h2.
    out: Vec<u8>,
    out_pos: usize,
    pending: Option<Pending>,
    decoder: Decoder<'static>,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> AuthorityFix<S> {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        AuthorityFix {
            inner,
            stage: Stage::Preface,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            pending: None,
            decoder,
            eof: false,
        }
    }

    /// Moves as much of `raw` as can be processed into `out`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.stage {
                Stage::Passthrough => {
                    self.out.append(&mut self.raw);
                    return Ok(());
                }
                Stage::Preface => {
                    let n = self.raw.len().min(PREFACE.len());
                    if self.raw[..n] != PREFACE[..n] {
                        self.stage = Stage::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    self.out.extend(self.raw.drain(..PREFACE.len()));
                    self.stage = Stage::FrameHeader;
                }
                Stage::FrameHeader => {
                    let Some(h) = self.raw.get(..FRAME_HEADER) else {
                        return Ok(());
                    };
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    if kind == HEADERS || kind == CONTINUATION {
                        self.raw.drain(..FRAME_HEADER);
                        self.stage = Stage::HeaderPayload {
                            kind,
                            flags,
                            stream,
                            len,
                        };
                    } else {
                        if self.pending.is_some() {
                            return Err(protocol("a frame interrupted a header block"));
                        }
                        self.out.extend(self.raw.drain(..FRAME_HEADER));
                        self.stage = Stage::Forward(len);
                    }
                }
                Stage::Forward(left) => {
                    let n = left.min(self.raw.len());
                    self.out.extend(self.raw.drain(..n));
                    if n < left {
                        self.stage = Stage::Forward(left - n);
                        return Ok(());
                    }
                    self.stage = Stage::FrameHeader;
                }
                Stage::HeaderPayload {
                    kind,
                    flags,
                    stream,
                    len,
                } => {
                    if len > MAX_BLOCK {
                        return Err(protocol("header frame too large"));
                    }
                    if self.raw.len() < len {
                        return Ok(());
                    }
                    let payload: Vec<u8> = self.raw.drain(..len).collect();
                    self.stage = Stage::FrameHeader;
                    self.header_frame(kind, flags, stream, &payload)?;
                }
            }
        }
    }

    fn header_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        if kind == HEADERS {
            if self.pending.is_some() {
                return Err(protocol("HEADERS inside another header block"));
            }
            let mut body = payload;
            if flags & PADDED != 0 {
                let (&pad, rest) = body
                    .split_first()
                    .ok_or_else(|| protocol("padded HEADERS without a pad length"))?;
                let keep = rest
                    .len()
                    .checked_sub(pad as usize)
                    .ok_or_else(|| protocol("HEADERS padding longer than the frame"))?;
                body = &rest[..keep];
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let (p, rest) = body
                    .split_at_checked(5)
                    .ok_or_else(|| protocol("HEADERS priority fields cut short"))?;
                let mut fields = [0u8; 5];
                fields.copy_from_slice(p);
                priority = Some(fields);
                body = rest;
            }
            self.pending = Some(Pending {
                stream,
                flags: flags & !(PADDED | END_HEADERS),
                priority,
                block: body.to_vec(),
            });
        } else {
            let p = self
                .pending
                .as_mut()
                .filter(|p| p.stream == stream)
                .ok_or_else(|| protocol("CONTINUATION outside a header block"))?;
            if p.block.len() + payload.len() > MAX_BLOCK {
                return Err(protocol("header block too large"));
            }
            p.block.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0
            && let Some(p) = self.pending.take()
        {
            let block = self.reencode(&p.block)?;
            write_block(&mut self.out, &p, &block);
        }
        Ok(())
    }

    /// Decodes a header block with the client's HPACK state and encodes it again as
    /// literals without indexing, replacing an authority h2 would refuse.
    fn reencode(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() * 2);
        self.decoder
            .decode_with_cb(block, |name, value| {
                let value: &[u8] = if &*name == b":authority" && !valid_authority(&value) {
                    REPLACEMENT
                } else {
                    &value
                };
                // Literal header field without indexing, new name (RFC 7541 6.2.2).
                out.push(0);
                encode_string(&mut out, &name);
                encode_string(&mut out, value);
            })
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {e}")))?;
        Ok(out)
    }
}

fn valid_authority(value: &[u8]) -> bool {
    !value.is_empty() && Authority::try_from(value).is_ok()
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2: {what}"))
}

/// An HPACK integer with an `prefix`-bit prefix whose first byte starts as `first`.
fn encode_int(out: &mut Vec<u8>, first: u8, prefix: u8, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A raw (not Huffman-coded) HPACK string literal.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Writes a re-encoded block as HEADERS plus as many CONTINUATIONs as it needs.
fn write_block(out: &mut Vec<u8>, p: &Pending, block: &[u8]) {
    let prio_len = if p.priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(MAX_FRAME - prio_len);
    let (first, mut rest) = block.split_at(first_len);
    let end = if rest.is_empty() { END_HEADERS } else { 0 };
    frame_header(
        out,
        prio_len + first.len(),
        HEADERS,
        p.flags | end,
        p.stream,
    );
    if let Some(prio) = &p.priority {
        out.extend_from_slice(prio);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, r) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = r;
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, end, p.stream);
        out.extend_from_slice(chunk);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // The client closed: what is left is an incomplete frame, which h2
                // would refuse anyway.
                this.eof = true;
                continue;
            }
            this.raw.extend_from_slice(rb.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for AuthorityFix<tokio::net::UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame_header(&mut v, payload.len(), kind, flags, stream);
        v.extend_from_slice(payload);
        v
    }

    /// Splits the rewritten stream back into frames and decodes every header block.
    type Frame = (u8, u8, u32, Vec<u8>);
    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    fn parse(mut bytes: &[u8]) -> (Vec<Frame>, Vec<Headers>) {
        assert_eq!(&bytes[..24], PREFACE);
        bytes = &bytes[24..];
        let mut frames = Vec::new();
        let mut blocks = Vec::new();
        let mut dec = Decoder::new();
        let mut block = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let (kind, flags) = (bytes[3], bytes[4]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            let payload = bytes[9..9 + len].to_vec();
            bytes = &bytes[9 + len..];
            if kind == HEADERS || kind == CONTINUATION {
                let start = if kind == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                block.extend_from_slice(&payload[start..]);
                if flags & END_HEADERS != 0 {
                    blocks.push(dec.decode(&block).unwrap());
                    block.clear();
                }
            }
            frames.push((kind, flags, stream, payload));
        }
        (frames, blocks)
    }

    async fn rewrite(input: Vec<u8>, split: usize) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for chunk in input.chunks(split) {
                client.write_all(chunk).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        drop(writer.await.unwrap());
        out
    }

    fn get<'a>(headers: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> &'a [u8] {
        &headers
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .unwrap()
            .1
    }

    #[tokio::test]
    async fn socket_path_authority_becomes_localhost_also_when_indexed() {
        let path: &[u8] = b"/run/switchyard/switchyard.sock";
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/switchyard.v1.Switchyard/Status"),
            (b":authority", path),
            (b"content-type", b"application/grpc"),
        ];
        // As C-core does: the first block adds :path, :authority and content-type to
        // the dynamic table (literal with incremental indexing, static name index), the
        // second refers to them by dynamic index.
        let mut first = vec![0x83, 0x86];
        for (name_index, value) in [(4, headers[2].1), (1, path), (31, headers[4].1)] {
            encode_int(&mut first, 0x40, 6, name_index);
            encode_string(&mut first, value);
        }
        let second = [0x83, 0x86, 0x80 | 64, 0x80 | 63, 0x80 | 62];
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        let data = [0u8, 0, 0, 0, 3, 1, 2, 3];
        input.extend(frame(0x0, 0x1, 1, &data));
        // Stream 3: the block split over HEADERS (padded, with priority) and a
        // CONTINUATION.
        let (a, b) = second.split_at(second.len() / 2);
        let mut headers3 = vec![2u8]; // pad length
        headers3.extend_from_slice(&[0, 0, 0, 1, 15]); // priority
        headers3.extend_from_slice(a);
        headers3.extend_from_slice(&[0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | 0x1, 3, &headers3));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        for split in [1, 7, 4096] {
            let out = rewrite(input.clone(), split).await;
            let (frames, blocks) = parse(&out);
            assert_eq!(blocks.len(), 2);
            for b in &blocks {
                assert_eq!(get(b, ":authority"), b"localhost");
                assert_eq!(get(b, ":path"), b"/switchyard.v1.Switchyard/Status");
                assert_eq!(b.len(), headers.len());
            }
            // DATA passes through byte for byte, after its stream's headers.
            assert_eq!(frames[2], (0x0, 0x1, 1, data.to_vec()));
            // Stream 3 keeps END_STREAM and its priority, loses the padding.
            let (kind, flags, stream, payload) = &frames[3];
            assert_eq!((*kind, *stream), (HEADERS, 3));
            assert_eq!(
                flags & (0x1 | PRIORITY | END_HEADERS | PADDED),
                0x1 | PRIORITY | END_HEADERS
            );
            assert_eq!(&payload[..5], &[0, 0, 0, 1, 15]);
        }
    }

    #[tokio::test]
    async fn valid_authorities_and_other_headers_are_kept() {
        let mut enc = loona_hpack::Encoder::new();
        let long = vec![b'x'; 40_000];
        let block = enc.encode(vec![
            (&b":authority"[..], &b"localhost:50051"[..]),
            (&b"x-big"[..], &long[..]),
        ]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..10_000]));
        input.extend(frame(CONTINUATION, 0, 1, &block[10_000..20_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[20_000..]));
        let (frames, blocks) = parse(&rewrite(input, 999).await);
        assert_eq!(get(&blocks[0], ":authority"), b"localhost:50051");
        assert_eq!(get(&blocks[0], "x-big"), &long[..]);
        assert!(frames.iter().all(|f| f.3.len() <= MAX_FRAME));
    }

    #[tokio::test]
    async fn not_http2_passes_through_and_bad_hpack_closes() {
        let http1 = b"GET / HTTP/1.1\r\nHost: /x.sock\r\n\r\n".to_vec();
        assert_eq!(rewrite(http1.clone(), 5).await, http1);

        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ));
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(&input).await.unwrap();
        let mut out = Vec::new();
        let e = AuthorityFix::new(server).read_to_end(&mut out).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
