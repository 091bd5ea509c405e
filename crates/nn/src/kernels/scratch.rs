//! Working buffers reused across calls, so that a forward pass does not
//! fault in fresh pages for every activation of every batch.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread.
const KEEP: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// An empty `Vec<f32>` with the capacity of an earlier one of this thread;
/// it goes back to the pool when dropped.
#[derive(Debug)]
pub struct Scratch(Vec<f32>);

/// An empty working buffer (see [`Scratch`]).
pub fn scratch() -> Scratch {
    let mut v = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    v.clear();
    Scratch(v)
}

/// A working buffer of `len` zeros.
pub fn scratch_zeroed(len: usize) -> Scratch {
    let mut s = scratch();
    s.0.resize(len, 0.0);
    s
}

/// Gives a buffer that is no longer needed to this thread's pool.
pub fn recycle(v: Vec<f32>) {
    if v.capacity() > 0 {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(v);
            }
        });
    }
}

impl Scratch {
    /// The buffer itself (it then leaves the pool for good, unless handed
    /// back with [`recycle`]).
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for Scratch {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_with_their_capacity() {
        let mut a = scratch();
        a.extend_from_slice(&[1.0; 1000]);
        drop(a);
        let b = scratch();
        assert!(b.is_empty() && b.capacity() >= 1000);
        let z = scratch_zeroed(10);
        assert_eq!(&z[..], &[0.0; 10]);
    }
}
