//! A bloom filter over entry ids, as `LedgerHave` carries it.
//!
//! Entry ids are blake3 hashes, already uniform, so the filter's seven probes
//! are seven 4-byte words of the id itself. Ten bits per id give about 1 %
//! false positives: an entry the filter wrongly claims is not sent, and is
//! fetched by a `LedgerWant` once the receiver sees it named as a parent or
//! a head.

/// Probes per id.
const PROBES: usize = 7;

/// Bits per id.
const BITS_PER_ID: usize = 10;

/// A bloom filter over 32-byte ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u8>,
}

impl Bloom {
    /// A filter holding `ids`.
    pub fn of<'a>(ids: impl ExactSizeIterator<Item = &'a [u8; 32]>) -> Bloom {
        let bytes = (ids.len() * BITS_PER_ID).div_ceil(8).max(8);
        let mut bloom = Bloom {
            bits: vec![0; bytes],
        };
        for id in ids {
            for bit in bloom.probes(id) {
                bloom.bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        bloom
    }

    /// A filter from its bits, as received. An empty filter holds nothing.
    pub fn from_bits(bits: Vec<u8>) -> Bloom {
        Bloom { bits }
    }

    /// The filter's bits, to send.
    pub fn into_bits(self) -> Vec<u8> {
        self.bits
    }

    /// Whether `id` may be in the filter (certainly not, when `false`).
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        !self.bits.is_empty()
            && self
                .probes(id)
                .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    fn probes<'a>(&self, id: &'a [u8; 32]) -> impl Iterator<Item = usize> + 'a {
        let m = self.bits.len() * 8;
        (0..PROBES).map(move |i| {
            let word = u32::from_le_bytes([id[4 * i], id[4 * i + 1], id[4 * i + 2], id[4 * i + 3]]);
            word as usize % m.max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn holds_what_it_was_given_and_few_others() {
        let ids: Vec<[u8; 32]> = (0..10_000).map(id).collect();
        let bloom = Bloom::from_bits(Bloom::of(ids.iter()).into_bits());
        assert!(ids.iter().all(|i| bloom.contains(i)));
        let false_positives = (10_000..20_000).filter(|&n| bloom.contains(&id(n))).count();
        // 1 % expected; 3 % would mean the probes are not independent.
        assert!(false_positives < 300, "{false_positives} false positives");
    }

    #[test]
    fn empty_holds_nothing() {
        assert!(!Bloom::from_bits(Vec::new()).contains(&id(1)));
        assert!(!Bloom::of(std::iter::empty()).contains(&id(1)));
    }
}
