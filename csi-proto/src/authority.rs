//! Serving gRPC on a unix socket to clients that send the socket's path as `:authority`.
//!
//! Several gRPC clients do (the kubelet's plugin watcher, gRPC C-core and Java over unix
//! sockets); h2, under tonic, refuses such a request with PROTOCOL_ERROR because a path is not
//! a valid authority. This shim sits between an accepted connection and the server: it decodes
//! each request header block the client sends (HPACK), puts `localhost` in place of an
//! authority that is not one, and re-encodes the block. Every other frame, and everything the
//! server sends, passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have: always safe to send.
const MAX_FRAME: usize = 16_384;

/// A connection whose request headers carry valid authorities; serve it like the socket.
pub struct NormalizedStream(DuplexStream);

/// Starts the shim for one accepted connection.
pub fn normalize(stream: UnixStream) -> NormalizedStream {
    let (server_side, shim_side) = tokio::io::duplex(256 * 1024);
    let (mut from_client, mut to_client) = stream.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(shim_side);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    tokio::spawn(async move {
        if let Err(e) = rewrite(&mut from_client, &mut to_server).await {
            tracing::debug!("authority shim: {e}");
        }
        let _ = to_server.shutdown().await;
    });
    NormalizedStream(server_side)
}

/// Copies the client's bytes to the server, rewriting request header blocks.
async fn rewrite<R, W>(input: &mut R, output: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    input.read_exact(&mut preface).await?;
    output.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: nothing we understand, so nothing to change.
        tokio::io::copy(input, output).await?;
        return Ok(());
    }
    let mut blocks = BlockRewriter::default();
    loop {
        let mut head = [0u8; 9];
        match input.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        input.read_exact(&mut payload).await?;
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        for bytes in blocks.frame(frame)? {
            output.write_all(&bytes).await?;
        }
        output.flush().await?;
    }
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

#[derive(Default)]
struct BlockRewriter {
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    pending: Option<Pending>,
}

impl BlockRewriter {
    /// The bytes to send on for one frame from the client (none while a block is incomplete).
    fn frame(&mut self, frame: Frame) -> io::Result<Vec<Vec<u8>>> {
        match frame.kind {
            HEADERS => {
                let (priority, fragment) = header_fragment(&frame)?;
                self.pending = Some(Pending {
                    stream: frame.stream,
                    end_stream: frame.flags & END_STREAM != 0,
                    priority,
                    block: fragment.to_vec(),
                });
            }
            CONTINUATION => match &mut self.pending {
                Some(p) if p.stream == frame.stream => p.block.extend_from_slice(&frame.payload),
                _ => return Ok(vec![raw(&frame)]),
            },
            _ => return Ok(vec![raw(&frame)]),
        }
        if frame.flags & END_HEADERS == 0 {
            return Ok(Vec::new());
        }
        let pending = self.pending.take().expect("set above");
        self.reencode(pending)
    }

    fn reencode(&mut self, pending: Pending) -> io::Result<Vec<Vec<u8>>> {
        let mut headers = self
            .decoder
            .decode(&pending.block)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("hpack: {e:?}")))?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !is_authority(value) {
                *value = b"localhost".to_vec();
            }
        }
        let block = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        Ok(frames(&pending, &block))
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn header_fragment(frame: &Frame) -> io::Result<(Option<[u8; 5]>, &[u8])> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame");
    let mut body = frame.payload.as_slice();
    let mut pad = 0usize;
    if frame.flags & PADDED != 0 {
        pad = *body.first().ok_or_else(bad)? as usize;
        body = &body[1..];
    }
    let mut priority = None;
    if frame.flags & PRIORITY != 0 {
        let fields: [u8; 5] = body
            .get(..5)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        priority = Some(fields);
        body = &body[5..];
    }
    let end = body.len().checked_sub(pad).ok_or_else(bad)?;
    Ok((priority, &body[..end]))
}

/// HEADERS (and CONTINUATION frames if needed) carrying `block`.
fn frames(pending: &Pending, block: &[u8]) -> Vec<Vec<u8>> {
    let mut prefix = Vec::new();
    let mut flags = 0;
    if pending.end_stream {
        flags |= END_STREAM;
    }
    if let Some(priority) = pending.priority {
        flags |= PRIORITY;
        prefix.extend_from_slice(&priority);
    }
    let first_len = block.len().min(MAX_FRAME - prefix.len());
    let (first, mut rest) = block.split_at(first_len);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let mut out = vec![encode(HEADERS, flags, pending.stream, &[&prefix, first])];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if tail.is_empty() { END_HEADERS } else { 0 };
        out.push(encode(CONTINUATION, flags, pending.stream, &[chunk]));
        rest = tail;
    }
    out
}

fn raw(frame: &Frame) -> Vec<u8> {
    encode(frame.kind, frame.flags, frame.stream, &[&frame.payload])
}

fn encode(kind: u8, flags: u8, stream: u32, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// Characters a `host[:port]` authority may hold (registered names, IPv4, bracketed IPv6).
fn is_authority(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b".-_~:[]".contains(b))
}

impl AsyncRead for NormalizedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for NormalizedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for NormalizedStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_frame(rewriter: &mut Encoder<'_>, authority: &[u8], flags: u8) -> Frame {
        let block = rewriter.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":authority", authority),
            (b":path", b"/pluginregistration.Registration/GetInfo"),
        ]);
        Frame {
            kind: HEADERS,
            flags: flags | END_HEADERS,
            stream: 1,
            payload: block,
        }
    }

    fn decoded(bytes: &[Vec<u8>], decoder: &mut Decoder<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let block: Vec<u8> = bytes.iter().flat_map(|f| f[9..].to_vec()).collect();
        decoder.decode(&block).unwrap()
    }

    #[test]
    fn a_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut client = Encoder::new();
        let mut rewriter = BlockRewriter::default();
        let mut server = Decoder::new();
        let out = rewriter
            .frame(headers_frame(
                &mut client,
                b"/var/lib/kubelet/reg.sock",
                END_STREAM,
            ))
            .unwrap();
        assert_eq!(out[0][4] & END_STREAM, END_STREAM);
        let headers = decoded(&out, &mut server);
        assert!(headers.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(headers.contains(&(b":method".to_vec(), b"POST".to_vec())));
        // A second request on the same connection: both dynamic tables stay in step.
        let out = rewriter
            .frame(headers_frame(&mut client, b"example.com:443", 0))
            .unwrap();
        let headers = decoded(&out, &mut server);
        assert!(headers.contains(&(b":authority".to_vec(), b"example.com:443".to_vec())));
    }

    #[test]
    fn continuation_frames_are_joined_and_other_frames_pass_through() {
        let mut client = Encoder::new();
        let mut rewriter = BlockRewriter::default();
        let mut frame = headers_frame(&mut client, b"/tmp/x.sock", 0);
        let tail = frame.payload.split_off(3);
        frame.flags &= !END_HEADERS;
        assert!(rewriter.frame(frame).unwrap().is_empty());
        let out = rewriter
            .frame(Frame {
                kind: CONTINUATION,
                flags: END_HEADERS,
                stream: 1,
                payload: tail,
            })
            .unwrap();
        let headers = decoded(&out, &mut Decoder::new());
        assert!(headers.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        let data = Frame {
            kind: 0x0,
            flags: 0x1,
            stream: 1,
            payload: b"abc".to_vec(),
        };
        assert_eq!(
            rewriter.frame(data).unwrap(),
            vec![encode(0x0, 0x1, 1, &[b"abc"])]
        );
    }

    #[test]
    fn padding_is_dropped_and_priority_kept() {
        let mut client = Encoder::new();
        let plain = headers_frame(&mut client, b"/x", 0);
        let mut payload = vec![2u8];
        payload.extend_from_slice(&[0, 0, 0, 3, 16]);
        payload.extend_from_slice(&plain.payload);
        payload.extend_from_slice(&[0, 0]);
        let frame = Frame {
            kind: HEADERS,
            flags: END_HEADERS | PADDED | PRIORITY,
            stream: 5,
            payload,
        };
        let out = BlockRewriter::default().frame(frame).unwrap();
        assert_eq!(out[0][4], END_HEADERS | PRIORITY);
        assert_eq!(&out[0][9..14], &[0, 0, 0, 3, 16]);
        let block = out[0][14..].to_vec();
        let headers = Decoder::new().decode(&block).unwrap();
        assert!(headers.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
    }
}
