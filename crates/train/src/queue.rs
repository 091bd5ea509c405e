//! The FIFO memory queue of recent positives' doc vectors, used as extra
//! negatives (the current positive is masked wherever it appears).

/// A ring of at most `capacity` doc vectors and the bank rows they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryQueue {
    capacity: usize,
    dim: usize,
    vectors: Vec<f32>,
    rows: Vec<u32>,
    next: usize,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(capacity: usize, dim: usize) -> MemoryQueue {
        MemoryQueue {
            capacity,
            dim,
            vectors: Vec::with_capacity(capacity * dim),
            rows: Vec::with_capacity(capacity),
            next: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The slot the next entry goes to.
    pub fn next_slot(&self) -> usize {
        self.next
    }

    /// The vectors, `[len, dim]`, in slot order.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// The bank row of each slot.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Appends entries, overwriting the oldest once full.
    pub fn push(&mut self, rows: &[u32], vectors: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        for (&r, v) in rows.iter().zip(vectors.chunks_exact(self.dim)) {
            if self.rows.len() < self.capacity {
                self.rows.push(r);
                self.vectors.extend_from_slice(v);
            } else {
                self.rows[self.next] = r;
                self.vectors[self.next * self.dim..(self.next + 1) * self.dim].copy_from_slice(v);
            }
            self.next = (self.next + 1) % self.capacity;
        }
    }

    /// Rebuilds a queue from saved slots (`vectors` `[rows.len(), dim]`).
    pub fn restore(
        capacity: usize,
        dim: usize,
        rows: Vec<u32>,
        vectors: Vec<f32>,
        next: usize,
    ) -> Option<MemoryQueue> {
        (rows.len() <= capacity
            && vectors.len() == rows.len() * dim
            && (next < capacity.max(1))
            && (rows.len() == capacity || next == rows.len() % capacity.max(1)))
        .then_some(MemoryQueue {
            capacity,
            dim,
            vectors,
            rows,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_overwrites_the_oldest() {
        let mut q = MemoryQueue::new(3, 2);
        q.push(&[1, 2], &[1.0, 1.0, 2.0, 2.0]);
        assert_eq!(q.rows(), &[1, 2]);
        q.push(&[3, 4], &[3.0, 3.0, 4.0, 4.0]);
        assert_eq!(q.rows(), &[4, 2, 3]);
        assert_eq!(q.vectors(), &[4.0, 4.0, 2.0, 2.0, 3.0, 3.0]);
        assert_eq!(q.next_slot(), 1);
        let back = MemoryQueue::restore(3, 2, q.rows().to_vec(), q.vectors().to_vec(), 1).unwrap();
        assert_eq!(back, q);
        assert!(MemoryQueue::restore(3, 2, vec![1, 2], vec![0.0; 4], 0).is_none());
        let mut off = MemoryQueue::new(0, 2);
        off.push(&[1], &[1.0, 1.0]);
        assert!(off.is_empty());
    }
}
