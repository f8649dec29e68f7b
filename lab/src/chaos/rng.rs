//! The campaign's only source of randomness: [`Rng`], seeded from the campaign's seed and the
//! round's number, so that a round can be replayed on its own.

/// SplitMix64: a small, well-mixed generator, reproducible from a seed (std has none, and the
/// lab keeps its dependencies few).
pub(super) struct Rng(u64);

impl Rng {
    /// The generator of round `round` of a campaign with `seed`: rounds are independent, so one
    /// can be replayed alone.
    pub(super) fn for_round(seed: u64, round: u32) -> Rng {
        let mut rng = Rng(seed ^ u64::from(round).wrapping_mul(0xd1b5_4a32_d192_ed03));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Uniform in `low..=high`.
    pub(super) fn between(&mut self, low: u32, high: u32) -> u32 {
        let (low, high) = (low.min(high), low.max(high));
        low + self.below(u64::from(high - low) + 1) as u32
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_reproducible_and_independent() {
        let draw = |seed, round| {
            let mut rng = Rng::for_round(seed, round);
            (0..8).map(|_| rng.between(1, 4)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 3), draw(7, 3));
        assert_ne!(draw(7, 3), draw(7, 4));
        assert_ne!(draw(7, 3), draw(8, 3));
        let mut rng = Rng::for_round(1, 1);
        for _ in 0..1000 {
            assert!((1..=3).contains(&rng.between(1, 3)));
            assert!((0.0..1.0).contains(&rng.unit()));
        }
    }
}
