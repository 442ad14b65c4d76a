//! The highest HLC timestamp ever committed, kept with the data: a restarted node's
//! clock starts above it, so it never issues a version below one it already wrote.

use super::*;

impl Store {
    /// The highest HLC timestamp ever committed; a restarted node's clock starts above it.
    pub fn hlc_high_water(&self) -> Result<Timestamp, StoreError> {
        let rtxn = self.tables.read_txn()?;
        Ok(
            meta::get_u64(&self.tables.meta, &rtxn, meta::HLC_HIGH_WATER)?
                .map(Timestamp::from_u64)
                .unwrap_or(Timestamp::ZERO),
        )
    }
}

impl Tables {
    /// The mark as this transaction sees it.
    fn high_water(&self, wtxn: &RwTxn<'_>) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(wtxn, meta::HLC_HIGH_WATER)
            .map_err(|e| self.write_error("reading the HLC high-water mark", e))?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    fn set_high_water(
        &self,
        wtxn: &mut RwTxn<'_>,
        to: Timestamp,
        what: &'static str,
    ) -> Result<(), StoreError> {
        self.meta
            .put(wtxn, meta::HLC_HIGH_WATER, &to.as_u64().to_be_bytes())
            .map_err(|e| self.write_error(what, e))
    }

    /// Raises the mark to `candidate` if it is below it.
    pub(super) fn raise_high_water(
        &self,
        wtxn: &mut RwTxn<'_>,
        candidate: Timestamp,
    ) -> Result<(), StoreError> {
        if candidate != Timestamp::ZERO && candidate.as_u64() > self.high_water(wtxn)? {
            self.set_high_water(wtxn, candidate, "raising the HLC high-water mark")?;
        }
        Ok(())
    }

    /// Lowers the mark to `cap` if it is above it: the mark was raised by versions from
    /// the future, which are rewritten now.
    pub(super) fn cap_high_water(
        &self,
        wtxn: &mut RwTxn<'_>,
        cap: Timestamp,
    ) -> Result<(), StoreError> {
        if self.high_water(wtxn)? > cap.as_u64() {
            self.set_high_water(wtxn, cap, "lowering the HLC high-water mark")?;
        }
        Ok(())
    }
}
