//! Python's `random.Random(seed).sample(population, k)`, bit for bit, so few-shot examples are
//! the ones lm-evaluation-harness draws (its default sampler is `random.Random(1234)` shared
//! across the documents of a task, in document order).
//!
//! CPython: MT19937 seeded by `init_by_array` with the seed's 32-bit words; `_randbelow(n)` draws
//! `getrandbits(n.bit_length())` until the value is below `n`; `sample` uses a rejection set when
//! the population is larger than `21 + 4^ceil(log4(3k))` (for `k > 5`), else a partial shuffle of
//! a copy of the population.

/// The Mersenne Twister of CPython's `random` module.
pub struct PyRandom {
    state: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let mut key: Vec<u32> = Vec::new();
        let mut s = seed;
        while s > 0 {
            key.push(s as u32);
            s >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom {
            state: [0; 624],
            index: 624,
        };
        r.init_genrand(19650218);
        let (mut i, mut j) = (1usize, 0usize);
        let n = 624;
        for _ in 0..n.max(key.len()) {
            let prev = r.state[i - 1] ^ (r.state[i - 1] >> 30);
            r.state[i] = (r.state[i] ^ prev.wrapping_mul(1664525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= n {
                r.state[0] = r.state[n - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..n - 1 {
            let prev = r.state[i - 1] ^ (r.state[i - 1] >> 30);
            r.state[i] = (r.state[i] ^ prev.wrapping_mul(1566083941)).wrapping_sub(i as u32);
            i += 1;
            if i >= n {
                r.state[0] = r.state[n - 1];
                i = 1;
            }
        }
        r.state[0] = 0x8000_0000;
        r.index = 624;
        r
    }

    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..624 {
            let prev = self.state[i - 1] ^ (self.state[i - 1] >> 30);
            self.state[i] = 1812433253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
    }

    /// The next 32 random bits (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % 624] & 0x7FFF_FFFF);
                let mut v = self.state[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_B0DF;
                }
                self.state[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9D2C_5680;
        y ^= (y << 15) & 0xEFC6_0000;
        y ^= y >> 18;
        y
    }

    /// `getrandbits(k)` for `1 <= k <= 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)` for `n >= 1`.
    pub fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        debug_assert!(k <= 32, "populations above 2^32 are not supported");
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// Indices chosen by `sample(range(n), k)`, in selection order. `k <= n`.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(3k, 4)), computed in floating point as CPython does.
            let exponent = ((3 * k) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(exponent.ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            let mut out = Vec::with_capacity(k);
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
            out
        } else {
            let mut selected = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython() {
        // python3 -c "import random; r=random.Random(1234); print([r.getrandbits(32) for _ in range(3)])"
        let mut r = PyRandom::new(1234);
        let first: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        // python3 -c "import random; r=random.Random(1234); print(r.sample(range(7473), 5), r.sample(range(10), 3))"
        let mut r2 = PyRandom::new(1234);
        let a = r2.sample_indices(7473, 5);
        let b = r2.sample_indices(10, 3);
        assert_eq!(
            (first, a, b),
            (
                EXPECTED_BITS.to_vec(),
                EXPECTED_A.to_vec(),
                EXPECTED_B.to_vec()
            )
        );
    }

    const EXPECTED_BITS: [u32; 3] = [4150886329, 3342196574, 1892932127];
    const EXPECTED_A: [usize; 5] = [6374, 3610, 957, 61, 742];
    const EXPECTED_B: [usize; 3] = [9, 0, 1];

    #[test]
    fn large_seed_and_k_above_five() {
        // python3 -c "import random; r=random.Random(2**40+5); print(r.sample(range(100), 8))"
        let mut r = PyRandom::new((1 << 40) + 5);
        assert_eq!(r.sample_indices(100, 8), vec![64, 66, 34, 84, 3, 67, 97, 5]);
    }
}
