//! A reference to one payload: `(slot, generation)`, plus the producer's name when it
//! travels to another process. The generation is the producer's write ticket, so it is
//! unique for the life of the ring and `slot == generation % slot_count`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotRef {
    pub slot: u32,
    pub generation: u64,
}

impl SlotRef {
    pub fn new(slot: u32, generation: u64) -> SlotRef {
        SlotRef { slot, generation }
    }

    /// Refuses a reference that cannot belong to a ring of `slot_count` slots.
    pub fn check(&self, slot_count: u64) -> Result<()> {
        if u64::from(self.slot) >= slot_count
            || self.generation % slot_count != u64::from(self.slot)
        {
            return Err(Error::invalid(format!(
                "slot reference ({}, generation {}) does not fit a ring of {slot_count} slots (slot must be generation % slot_count)",
                self.slot, self.generation
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_ties_slot_to_generation() {
        assert!(SlotRef::new(1, 5).check(4).is_ok());
        assert!(SlotRef::new(2, 5).check(4).is_err());
        assert!(SlotRef::new(4, 4).check(4).is_err());
    }
}
