//! Splitting a byte stream into blocks. Pure code: no I/O, so the rules are
//! unit-tested here and a different guest build can chunk differently — the
//! recipe, not the chunker, says how a blob is rebuilt.

/// Splits a stream into blocks, fed in arbitrary pieces.
pub trait Chunker {
    /// A stable description stored in recipes, e.g. `fixed-4096`.
    fn name(&self) -> String;
    /// Feeds more bytes; calls `emit` for each block completed by them.
    fn feed<E>(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>;
    /// Ends the stream; emits the last, possibly short, block.
    fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E>;
}

/// Blocks of a fixed size, the last one shorter (the guest cuts blobs it
/// cannot read as tar this way, in large blocks).
pub struct FixedChunker {
    size: usize,
    pending: Vec<u8>,
}

/// The default block size.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

impl FixedChunker {
    /// # Panics
    /// If `size` is zero.
    pub fn new(size: usize) -> Self {
        assert!(size > 0, "block size must be positive");
        Self {
            size,
            pending: Vec::with_capacity(size),
        }
    }
}

impl Chunker for FixedChunker {
    fn name(&self) -> String {
        format!("fixed-{}", self.size)
    }

    fn feed<E>(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.pending.is_empty() {
            let take = (self.size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < self.size {
                return Ok(());
            }
            emit(&self.pending)?;
            self.pending.clear();
        }
        let mut whole = data.chunks_exact(self.size);
        for block in &mut whole {
            emit(block)?;
        }
        self.pending.extend_from_slice(whole.remainder());
        Ok(())
    }

    fn finish<E>(&mut self, emit: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.pending.is_empty() {
            emit(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::seeded_bytes;
    use std::convert::Infallible;

    fn four_k() -> FixedChunker {
        FixedChunker::new(DEFAULT_BLOCK_SIZE)
    }

    fn blocks_of(c: &mut FixedChunker, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| -> Result<(), Infallible> {
            out.push(b.to_vec());
            Ok(())
        };
        for p in pieces {
            c.feed(p, &mut emit).unwrap();
        }
        c.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn boundaries_fall_every_4096_bytes_with_a_short_tail() {
        let data = seeded_bytes(7, 3 * 4096 + 100);
        let blocks = blocks_of(&mut four_k(), &[&data]);
        let sizes: Vec<usize> = blocks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4096, 4096, 4096, 100]);
        assert_eq!(blocks.concat(), data);
    }

    #[test]
    fn feeding_in_odd_pieces_gives_the_same_blocks() {
        let data = seeded_bytes(9, 5 * 4096 + 1);
        let whole = blocks_of(&mut four_k(), &[&data]);
        let pieces: Vec<&[u8]> = data.chunks(1000).chain(std::iter::once(&[][..])).collect();
        let split = blocks_of(&mut four_k(), &pieces);
        assert_eq!(whole, split);
    }

    #[test]
    fn exact_multiple_has_no_empty_tail_and_empty_input_has_no_blocks() {
        let data = seeded_bytes(3, 2 * 4096);
        assert_eq!(blocks_of(&mut four_k(), &[&data]).len(), 2);
        assert!(blocks_of(&mut four_k(), &[b""]).is_empty());
    }

    #[test]
    fn known_vector_block_ids() {
        // 4096 zero bytes and a 1-byte tail: ids pinned so a chunker change is noticed.
        let mut data = vec![0u8; 4096];
        data.push(b'a');
        let ids: Vec<String> = blocks_of(&mut four_k(), &[&data])
            .iter()
            .map(|b| crate::block::BlockId::compute(b).unwrap().to_hex())
            .collect();
        assert_eq!(
            ids,
            [
                "1ceaf73df40e531df3bfb26b4fb7cd95fb7bff1d",
                "86f7e437faa5a7fce15d1ddcb9eaeaea377667b8"
            ]
        );
    }

    #[test]
    fn name_records_the_block_size() {
        assert_eq!(FixedChunker::new(512).name(), "fixed-512");
    }
}
