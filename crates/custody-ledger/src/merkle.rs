//! RFC 6962 Merkle trees (as restated by RFC 9162 §2.1).
//!
//! Nodes are addressed as `(level, index)`: level 0 holds the leaf hashes, and the
//! node `(l, i)` is the root of the perfect subtree over leaves `[i·2^l, (i+1)·2^l)`.
//! A store keeps every such node once it is complete (the frontier tells which),
//! and any proof is then a handful of lookups.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// `SHA-256(0x00 ‖ data)`.
pub fn hash_leaf(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn hash_children(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The RFC 6962 root of a list of leaf hashes, by the definition (for tests and
/// offline checks of small logs).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            hash_children(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two smaller than `n` (`n ≥ 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// A node created when an append completes a perfect subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub level: u32,
    pub index: u64,
    pub hash: Hash,
}

/// The right edge of an append-only tree: the roots of the perfect subtrees that
/// make up `[0, size)`, one per set bit of `size`, largest first. Appending and
/// computing the root need nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MerkleFrontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl MerkleFrontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// The `(level, index)` of the peaks of a tree of `size` leaves, largest first:
    /// what to read from a node store to rebuild its frontier.
    pub fn peak_positions(size: u64) -> Vec<(u32, u64)> {
        let mut positions = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                positions.push((level, start >> level));
                start += 1 << level;
            }
        }
        positions
    }

    /// Rebuilds a frontier from the hashes at [`peak_positions`](Self::peak_positions).
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Result<Self, ProofError> {
        if peaks.len() != size.count_ones() as usize {
            return Err(ProofError::Malformed("peak count does not match the tree size"));
        }
        Ok(Self { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the interior nodes that became complete.
    pub fn append(&mut self, leaf: Hash) -> Vec<Node> {
        let index = self.size;
        let mut hash = leaf;
        let mut level = 0;
        let mut created = Vec::new();
        while (index >> level) & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            hash = hash_children(&left, &hash);
            level += 1;
            created.push(Node { level, index: index >> level, hash });
        }
        self.peaks.push(hash);
        self.size += 1;
        created
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else { return empty_root() };
        iter.fold(*last, |acc, peak| hash_children(peak, &acc))
    }
}

/// Where proofs read complete nodes from: `(level, index)` of a perfect subtree.
pub trait NodeSource {
    type Error;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// A list of leaf hashes held in memory is a node source (for tests and verifiers).
impl NodeSource for [Hash] {
    type Error = ProofError;
    fn node(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let width = 1u64 << level;
        let start = index * width;
        let end = start + width;
        if end > self.len() as u64 {
            return Err(ProofError::Malformed("node beyond the end of the tree"));
        }
        Ok(root_of(&self[start as usize..end as usize]))
    }
}

/// Errors of proof construction and verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree sizes must satisfy first <= second, got {first} and {second}")]
    SizesOutOfOrder { first: u64, second: u64 },
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}

/// The hash of the subtree over `[start, start + size)`, as MTH defines it.
fn subtree<S: NodeSource + ?Sized>(src: &S, start: u64, size: u64) -> Result<Hash, S::Error> {
    if size.is_power_of_two() && start.is_multiple_of(size) {
        return src.node(size.trailing_zeros(), start / size);
    }
    let k = split_point(size);
    let left = subtree(src, start, k)?;
    let right = subtree(src, start + k, size - k)?;
    Ok(hash_children(&left, &right))
}

/// Either a proof-shape error or the node source's own error.
#[derive(Debug, thiserror::Error)]
pub enum ProveError<E> {
    #[error(transparent)]
    Proof(ProofError),
    #[error("reading a tree node: {0}")]
    Source(E),
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 6962 PATH).
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if index >= size {
        return Err(ProveError::Proof(ProofError::IndexOutOfRange { index, size }));
    }
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out).map_err(ProveError::Source)?;
    Ok(out)
}

fn path<S: NodeSource + ?Sized>(src: &S, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) -> Result<(), S::Error> {
    if n == 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(src, m, start, k, out)?;
        out.push(subtree(src, start + k, n - k)?);
    } else {
        path(src, m - k, start + k, n - k, out)?;
        out.push(subtree(src, start, k)?);
    }
    Ok(())
}

/// The proof that the tree of `first` leaves is a prefix of the tree of `second`
/// (RFC 6962 PROOF). Empty when `first` is 0 or equals `second`.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProveError<S::Error>> {
    if first > second {
        return Err(ProveError::Proof(ProofError::SizesOutOfOrder { first, second }));
    }
    let mut out = Vec::new();
    if first > 0 && first < second {
        subproof(src, first, 0, second, true, &mut out).map_err(ProveError::Source)?;
    }
    Ok(out)
}

fn subproof<S: NodeSource + ?Sized>(
    src: &S,
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !whole {
            out.push(subtree(src, start, m)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, k, whole, out)?;
        out.push(subtree(src, start + k, n - k)?);
    } else {
        subproof(src, m - k, start + k, n - k, false, out)?;
        out.push(subtree(src, start, k)?);
    }
    Ok(())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = hash_children(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = hash_children(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesOutOfOrder { first, second });
    }
    if first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if first_root == second_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if first == 0 {
        // The empty tree is a prefix of every tree.
        return if proof.is_empty() { Ok(()) } else { Err(ProofError::WrongLength) };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut f_n, mut s_n) = (first - 1, second - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = hash_children(c, &fr);
            sr = hash_children(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = hash_children(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *first_root || sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference tree of the Certificate Transparency project's Merkle tests
    // (certificate-transparency merkle_tree_test): eight leaf inputs, the roots of
    // each prefix, and audit paths and consistency proofs over them.
    const LEAF_INPUTS: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    // (leaf index, tree size, path); the reference numbers leaves from 1.
    const PATHS: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn leaves() -> Vec<Hash> {
        LEAF_INPUTS.iter().map(|l| hash_leaf(&hex::decode(l).unwrap())).collect()
    }

    fn hashes(list: &[&str]) -> Vec<Hash> {
        list.iter().map(|s| h(s)).collect()
    }

    #[test]
    fn roots_match_the_reference_for_every_prefix() {
        assert_eq!(hex::encode(empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let leaves = leaves();
        let mut frontier = MerkleFrontier::new();
        for (n, expected) in ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root_of(&leaves[..=n])), *expected, "size {}", n + 1);
            frontier.append(leaves[n]);
            assert_eq!(hex::encode(frontier.root()), *expected, "frontier size {}", n + 1);
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference_and_verify() {
        let leaves = leaves();
        for (index, size, expected) in PATHS {
            let proof = inclusion_proof(&leaves[..size as usize], index, size).unwrap();
            assert_eq!(proof, hashes(expected), "leaf {index} of {size}");
            verify_inclusion(&leaves[index as usize], index, size, &proof, &h(ROOTS[size as usize - 1])).unwrap();
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_and_verify() {
        let leaves = leaves();
        for (first, second, expected) in CONSISTENCY {
            let proof = consistency_proof(&leaves[..second as usize], first, second).unwrap();
            assert_eq!(proof, hashes(expected), "{first} -> {second}");
            let (r1, r2) = (h(ROOTS[first as usize - 1]), h(ROOTS[second as usize - 1]));
            verify_consistency(first, second, &r1, &r2, &proof).unwrap();
        }
    }

    fn flip(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    /// Every mutation of every proof over trees up to 8 leaves is rejected: a
    /// flipped bit in any proof hash, the leaf or the root; a wrong index; a wrong
    /// size; a hash dropped or added.
    #[test]
    fn every_mutated_inclusion_proof_is_rejected() {
        let leaves = leaves();
        for size in 1..=8u64 {
            let tree = &leaves[..size as usize];
            let root = root_of(tree);
            for index in 0..size {
                let leaf = leaves[index as usize];
                let proof = inclusion_proof(tree, index, size).unwrap();
                verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
                for i in 0..proof.len() {
                    for bit in [0, 7, 100, 255] {
                        let mut bad = proof.clone();
                        bad[i] = flip(&bad[i], bit);
                        assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                    }
                }
                assert!(verify_inclusion(&flip(&leaf, 3), index, size, &proof, &root).is_err());
                assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, 9)).is_err());
                for other in (0..size + 2).filter(|o| *o != index) {
                    assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err(), "index {other}");
                }
                // A wrong size fails against the root of a tree of that size; sizes
                // whose path has the same shape differ only in that root.
                for other in (1..12).filter(|o| *o != size) {
                    let other_root = if other <= 8 { root_of(&leaves[..other as usize]) } else { root };
                    assert!(verify_inclusion(&leaf, index, other, &proof, &other_root).is_err(), "size {other}");
                }
                if !proof.is_empty() {
                    assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
            }
        }
    }

    #[test]
    fn every_mutated_consistency_proof_is_rejected() {
        let leaves = leaves();
        for second in 1..=8u64 {
            let tree = &leaves[..second as usize];
            let r2 = root_of(tree);
            for first in 1..second {
                let r1 = root_of(&tree[..first as usize]);
                let proof = consistency_proof(tree, first, second).unwrap();
                verify_consistency(first, second, &r1, &r2, &proof).unwrap();
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], 17);
                    assert!(verify_consistency(first, second, &r1, &r2, &bad).is_err(), "{first}->{second} hash {i}");
                }
                assert!(verify_consistency(first, second, &flip(&r1, 1), &r2, &proof).is_err());
                assert!(verify_consistency(first, second, &r1, &flip(&r2, 1), &proof).is_err());
                // As for inclusion: a wrong size is checked against that size's own root.
                for other in (1..=second).filter(|o| *o != first) {
                    let other_root = root_of(&tree[..other as usize]);
                    assert!(verify_consistency(other, second, &other_root, &r2, &proof).is_err(), "first {other}");
                }
                for other in (first..12).filter(|o| *o != second) {
                    let other_root = if other <= 8 { root_of(&leaves[..other as usize]) } else { r2 };
                    assert!(verify_consistency(first, other, &r1, &other_root, &proof).is_err(), "second {other}");
                }
                assert!(verify_consistency(first, second, &r1, &r2, &proof[1..]).is_err());
            }
        }
    }

    proptest::proptest! {
        /// Frontier roots, proofs from stored nodes and the MTH definition agree for any size.
        #[test]
        fn proofs_from_frontier_nodes_verify(size in 1u64..300, seed in 0u64..1000) {
            let leaves: Vec<Hash> = (0..size).map(|i| hash_leaf(&(i ^ seed).to_le_bytes())).collect();
            let mut frontier = MerkleFrontier::new();
            let mut nodes = std::collections::HashMap::new();
            for (i, leaf) in leaves.iter().enumerate() {
                nodes.insert((0u32, i as u64), *leaf);
                for n in frontier.append(*leaf) {
                    nodes.insert((n.level, n.index), n.hash);
                }
            }
            struct Stored(std::collections::HashMap<(u32, u64), Hash>);
            impl NodeSource for Stored {
                type Error = ();
                fn node(&self, level: u32, index: u64) -> Result<Hash, ()> {
                    self.0.get(&(level, index)).copied().ok_or(())
                }
            }
            let stored = Stored(nodes);
            let root = root_of(&leaves);
            proptest::prop_assert_eq!(frontier.root(), root);
            let peaks = MerkleFrontier::peak_positions(size)
                .into_iter()
                .map(|(l, i)| stored.node(l, i).unwrap())
                .collect();
            proptest::prop_assert_eq!(MerkleFrontier::from_peaks(size, peaks).unwrap().root(), root);
            let index = seed % size;
            let proof = inclusion_proof(&stored, index, size).unwrap();
            proptest::prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &proof, &root).is_ok());
            let first = 1 + seed % size;
            let proof = consistency_proof(&stored, first, size).unwrap();
            let r1 = root_of(&leaves[..first as usize]);
            proptest::prop_assert!(verify_consistency(first, size, &r1, &root, &proof).is_ok());
        }
    }
}
