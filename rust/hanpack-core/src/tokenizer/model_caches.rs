//! The per-thread caches of the last few models a thread used.
//!
//! The encoders keep direct-mapped caches per thread (pairs, characters, segments) that
//! hold one model's answers. Emptying them for another model is a pass over a megabyte or
//! more, which a thread that alternates between two tokenizers paid on every call: two
//! Chinese-LLaMA tokenizers encoding the same lines in turn took 64-72 µs a line, against
//! 2.2 µs for one. [`switch`] parks the caches of the models used last instead.

/// Caches of this many models wait per thread besides the one in use.
pub const PARKED: usize = 3;

/// Parks `current`, the caches of model `from` (0: none, and `current` is dropped), and
/// returns those of model `to`: parked ones if this thread used `to` lately, else the
/// least recently used ones or new ones, emptied by `reset`.
pub fn switch<C: Default>(
    parked: &mut Vec<(u64, C)>,
    from: u64,
    current: C,
    to: u64,
    reset: impl FnOnce(&mut C),
) -> C {
    if from != 0 {
        parked.insert(0, (from, current)); // most recent first
    }
    if let Some(i) = parked.iter().position(|&(owner, _)| owner == to) {
        return parked.remove(i).1;
    }
    let mut caches = if parked.len() > PARKED {
        parked.pop().map(|(_, c)| c).unwrap_or_default()
    } else {
        C::default()
    };
    reset(&mut caches);
    caches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_models_and_reuses_the_oldest() {
        let mut parked: Vec<(u64, Vec<u64>)> = Vec::new();
        let reset = |c: &mut Vec<u64>| c.clear();
        // Model 1's caches fill, then models 2.. take over in turn.
        let mut current = switch(&mut parked, 0, Vec::new(), 1, reset);
        current.push(1);
        let mut owner = 1;
        for next in 2..=PARKED as u64 + 1 {
            current = switch(&mut parked, owner, current, next, reset);
            assert!(current.is_empty(), "a new model starts empty");
            current.push(next);
            owner = next;
        }
        // Model 1 comes back with what it had.
        current = switch(&mut parked, owner, current, 1, reset);
        assert_eq!(current, vec![1]);
        assert_eq!(parked.len(), PARKED);
        // One model more than fits: the least recently used (model 2) is emptied for it.
        current = switch(&mut parked, 1, current, 100, reset);
        assert!(current.is_empty());
        assert_eq!(parked.len(), PARKED);
        assert!(parked.iter().all(|&(o, _)| o != 2));
        assert_eq!(parked[0], (1, vec![1]));
    }
}
