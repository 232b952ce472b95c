//! The per-thread caches of the models a thread uses in turn.
//!
//! The encoders keep direct-mapped caches per thread (pairs, characters, segments) that
//! hold one model's answers. Emptying them for another model is a pass over a megabyte or
//! more, which a thread that alternates between two tokenizers paid on every call: two
//! Chinese-LLaMA tokenizers encoding the same lines in turn took 64-72 µs a line, against
//! 2.2 µs for one. [`ThreadCaches`] parks the caches of models that the thread comes back
//! to, up to [`PARKED`] of them. A model used once and left (a run of tokenizers loaded one
//! after another) hands its caches on to the next one, so memory grows only with models
//! really used in turn: a loaded tokenizer's cost stays what `test_loaded_model_memory`
//! bounds.

use std::ops::{Deref, DerefMut};

/// Caches of this many models wait per thread besides the one in use.
pub const PARKED: usize = 3;
/// Models remembered (without caches) to notice that the thread came back to one.
const RECENT: usize = 8;

/// One thread's caches (`C`) for the model in use, and those of the models it uses in
/// turn with it. Reads as the caches in use (`Deref`).
#[derive(Default)]
pub struct ThreadCaches<C> {
    /// The model the caches in use belong to (0: none yet).
    owner: u64,
    active: C,
    /// Most recent first.
    parked: Vec<(u64, C)>,
    /// The models used before the one in use, most recent first (0: none).
    recent: [u64; RECENT],
}

impl<C: Default> ThreadCaches<C> {
    /// Makes the caches of model `owner` (an id no other model has) the ones in use:
    /// parked ones if the thread parked them, else emptied ones (by `reset`).
    #[inline]
    pub fn claim(&mut self, owner: u64, reset: impl FnOnce(&mut C)) {
        if self.owner != owner {
            self.switch(owner, reset);
        }
    }

    #[cold]
    fn switch(&mut self, owner: u64, reset: impl FnOnce(&mut C)) {
        let previous = std::mem::replace(&mut self.owner, owner);
        let came_back = self.recent.contains(&owner);
        if previous != 0 {
            self.recent.copy_within(..RECENT - 1, 1);
            self.recent[0] = previous;
        }
        if let Some(i) = self.parked.iter().position(|&(o, _)| o == owner) {
            let caches = self.parked.remove(i).1;
            let left = std::mem::replace(&mut self.active, caches);
            self.parked.insert(0, (previous, left));
            self.parked.truncate(PARKED);
            return;
        }
        if came_back && previous != 0 {
            // Models used in turn: the one left keeps its caches.
            let spare = if self.parked.len() == PARKED {
                self.parked.pop().map(|(_, c)| c)
            } else {
                None
            };
            let left = std::mem::replace(&mut self.active, spare.unwrap_or_default());
            self.parked.insert(0, (previous, left));
        }
        reset(&mut self.active);
    }
}

/// Empties a direct-mapped table: `slots` copies of `empty` (the allocation is kept).
pub fn refill<T: Copy>(table: &mut Vec<T>, slots: usize, empty: T) {
    table.clear();
    table.resize(slots, empty);
}

impl<C> Deref for ThreadCaches<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.active
    }
}

impl<C> DerefMut for ThreadCaches<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(c: &mut Vec<u64>) {
        c.clear();
    }

    #[test]
    fn models_used_one_after_another_share_one_set_of_caches() {
        let mut caches: ThreadCaches<Vec<u64>> = ThreadCaches::default();
        for model in 1..=10 {
            caches.claim(model, reset);
            assert!(caches.is_empty(), "each model starts empty");
            caches.push(model);
        }
        assert!(caches.parked.is_empty());
    }

    #[test]
    fn models_used_in_turn_keep_their_caches_up_to_the_limit() {
        let mut caches: ThreadCaches<Vec<u64>> = ThreadCaches::default();
        let models = PARKED as u64 + 1;
        // The first round fills each model's caches; from the second, coming back to a
        // model parks the one left, and the model's own caches are found again from the third.
        for round in 0..4 {
            for model in 1..=models {
                caches.claim(model, reset);
                if round >= 2 {
                    assert_eq!(*caches, vec![model], "round {round}, model {model}");
                } else {
                    assert!(caches.is_empty() || *caches == vec![model]);
                    caches.clear();
                    caches.push(model);
                }
            }
        }
        assert_eq!(caches.parked.len(), PARKED);
        // One model more than fits, used in turn with them: the least recently used set is
        // emptied and reused, never handed over with another model's entries.
        for round in 0..3 {
            for model in 1..=models + 1 {
                caches.claim(model, reset);
                assert!(
                    caches.is_empty() || *caches == vec![model],
                    "round {round}, model {model}"
                );
                caches.clear();
                caches.push(model);
            }
        }
        assert!(caches.parked.len() <= PARKED);
    }
}
