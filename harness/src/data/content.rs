//! Seeded file content: drawn from the dataset's RNG in a fixed chunking, so a file written
//! with positioned writes (holes left unwritten) and one streamed into a tar entry hold the
//! same bytes.

use std::io::{self, Read};

use rand::RngCore;
use rand::rngs::StdRng;

use super::CHUNK;

/// Seeded bytes of one file: random inside `extents` (offset, length; in increasing order),
/// zeros elsewhere. The RNG is drawn at most CHUNK bytes at a time from the start of each
/// extent: the chunking is part of the stream (fill_bytes drops the unused part of its last
/// word), so consumers read through `next_chunk` or `Read`, which draw alike.
pub(super) struct Content<'a> {
    rng: &'a mut StdRng,
    len: u64,
    extents: Vec<(u64, u64)>,
    /// Index into `extents` and bytes of it already drawn.
    at: (usize, u64),
    buf: Vec<u8>,
    /// The chunk in `buf` (offset, length) and the read position, for `Read`.
    current: Option<(u64, usize)>,
    pos: u64,
}

impl<'a> Content<'a> {
    /// `len` random bytes.
    pub fn dense(rng: &'a mut StdRng, len: u64) -> Self {
        Self::new(rng, len, vec![(0, len)])
    }

    pub fn new(rng: &'a mut StdRng, len: u64, extents: Vec<(u64, u64)>) -> Self {
        let largest = extents.iter().map(|e| e.1).max().unwrap_or(0);
        Content {
            rng,
            len,
            extents,
            at: (0, 0),
            buf: vec![0; largest.min(CHUNK as u64) as usize],
            current: None,
            pos: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if some range is never drawn (it reads as zeros).
    pub fn has_holes(&self) -> bool {
        self.extents != [(0, self.len)]
    }

    /// Draws the next chunk of seeded bytes; None once every extent is done.
    pub fn next_chunk(&mut self) -> Option<(u64, &[u8])> {
        let (off, n) = self.advance()?;
        Some((off, &self.buf[..n]))
    }

    fn advance(&mut self) -> Option<(u64, usize)> {
        self.current = self.draw();
        self.current
    }

    fn draw(&mut self) -> Option<(u64, usize)> {
        let (i, done) = &mut self.at;
        while *i < self.extents.len() && *done == self.extents[*i].1 {
            *i += 1;
            *done = 0;
        }
        let (start, len) = *self.extents.get(*i)?;
        let n = (len - *done).min(CHUNK as u64) as usize;
        self.rng.fill_bytes(&mut self.buf[..n]);
        let off = start + *done;
        *done += n as u64;
        Some((off, n))
    }
}

/// The whole file, holes as zeros: what a tar entry carries.
impl Read for Content<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || out.is_empty() {
            return Ok(0);
        }
        if self
            .current
            .is_none_or(|(off, n)| off + n as u64 <= self.pos)
        {
            self.advance();
        }
        let n = match self.current {
            Some((off, n)) if off <= self.pos && self.pos < off + n as u64 => {
                let start = (self.pos - off) as usize;
                let k = (n - start).min(out.len());
                out[..k].copy_from_slice(&self.buf[start..start + k]);
                k
            }
            // In a hole: zeros up to the next chunk (never behind `pos`), or to the end.
            current => {
                let until = current.map_or(self.len, |(off, _)| off);
                let k = until
                    .min(self.len)
                    .saturating_sub(self.pos)
                    .min(out.len() as u64) as usize;
                out[..k].fill(0);
                k
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}
