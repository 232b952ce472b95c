//! Rayon pools by thread count, built once and reused (building a pool per call would
//! cost more than encoding a small batch). `None` uses rayon's global pool (all cores).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

pub fn install<R: Send>(num_threads: Option<usize>, f: impl FnOnce() -> R + Send) -> R {
    match num_threads {
        None | Some(0) => f(),
        Some(n) => {
            let pool = {
                let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
                pools
                    .entry(n)
                    .or_insert_with(|| {
                        Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().expect("cannot start threads"))
                    })
                    .clone()
            };
            pool.install(f)
        }
    }
}
