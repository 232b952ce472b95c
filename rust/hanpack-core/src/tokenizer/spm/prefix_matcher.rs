//! Longest-prefix matching of USER_DEFINED pieces (sentencepiece's `PrefixMatcher`).
//! User-defined symbols are matched before normalization and are never split or merged.
//!
//! A plain byte trie: the symbol sets are small (usually < 1,000), so a double array
//! would save nothing measurable.

#[derive(Clone, Debug, Default)]
struct Node {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    terminal: bool,
}

#[derive(Clone, Debug)]
pub struct PrefixMatcher {
    nodes: Vec<Node>,
    /// `first_byte[b]`: some symbol starts with byte `b` (a cheap pre-check on the hot path).
    first_byte: [bool; 256],
}

impl PrefixMatcher {
    /// `None` when there are no symbols, so callers can skip matching entirely.
    pub fn new<'a>(symbols: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut m = Self {
            nodes: vec![Node::default()],
            first_byte: [false; 256],
        };
        let mut any = false;
        for s in symbols {
            if s.is_empty() {
                continue;
            }
            any = true;
            m.first_byte[s.as_bytes()[0] as usize] = true;
            let mut node = 0usize;
            for &b in s.as_bytes() {
                let pos = m.nodes[node].children.binary_search_by_key(&b, |c| c.0);
                node = match pos {
                    Ok(i) => m.nodes[node].children[i].1 as usize,
                    Err(i) => {
                        let next = m.nodes.len() as u32;
                        m.nodes.push(Node::default());
                        m.nodes[node].children.insert(i, (b, next));
                        next as usize
                    }
                };
            }
            m.nodes[node].terminal = true;
        }
        any.then_some(m)
    }

    /// Byte length of the longest symbol that prefixes `input`.
    #[inline]
    pub fn longest(&self, input: &[u8]) -> Option<usize> {
        if !self.first_byte[*input.first()? as usize] {
            return None;
        }
        let mut node = 0usize;
        let mut best = None;
        for (i, b) in input.iter().enumerate() {
            let children = &self.nodes[node].children;
            match children.binary_search_by_key(b, |c| c.0) {
                Ok(k) => node = children[k].1 as usize,
                Err(_) => break,
            }
            if self.nodes[node].terminal {
                best = Some(i + 1);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixMatcher;

    #[test]
    fn longest_wins() {
        let m = PrefixMatcher::new(["<a>", "<ab>", "中"]).unwrap();
        assert_eq!(m.longest(b"<ab>x"), Some(4));
        assert_eq!(m.longest(b"<a>b"), Some(3));
        assert_eq!(m.longest(b"<b"), None);
        assert_eq!(m.longest("中文".as_bytes()), Some(3));
        assert!(PrefixMatcher::new([]).is_none());
    }
}
