//! Task markers: `<plan-id>/<stage>/<task>` under a work dir. A marker is written only after
//! every chunk of its task is durably stored, so a marker means "done"; a task without one is
//! run again, and its idempotent whole-chunk writes make that safe.

use std::collections::HashSet;

use crate::{Store, StoreError};

/// The markers of one plan in one work dir.
#[derive(Clone, Debug)]
pub struct Markers {
    store: Store,
    plan_id: String,
}

impl Markers {
    /// Markers of `plan_id` in the work dir `store`.
    #[must_use]
    pub fn new(store: Store, plan_id: &str) -> Self {
        Self {
            store,
            plan_id: plan_id.to_string(),
        }
    }

    fn key(&self, stage: &str, task: u64) -> String {
        format!("{}/{stage}/{task}", self.plan_id)
    }

    /// Record that `task` of `stage` is done, with a small JSON record of how it went.
    ///
    /// # Errors
    /// [`StoreError`] when the work dir cannot be written.
    pub fn mark(
        &self,
        stage: &str,
        task: u64,
        record: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let key = self.key(stage, task);
        let bytes = self.store.json_bytes(&key, record, false)?;
        // The task's values first: a marker must never outlive them after a power loss.
        crate::local::sync_pending().map_err(|e| StoreError::Backend {
            url: self.store.url().to_string(),
            operation: "sync the task's values before its marker",
            key: key.clone(),
            source: e.into(),
        })?;
        self.store.put(&key, bytes)
    }

    /// Forget that `task` of `stage` is done: it runs again (its outputs were found lost).
    ///
    /// # Errors
    /// [`StoreError`] when the work dir cannot be written.
    pub fn unmark(&self, stage: &str, task: u64) -> Result<(), StoreError> {
        self.store.erase(&self.key(stage, task))
    }

    /// True when `task` of `stage` is done.
    ///
    /// # Errors
    /// [`StoreError`] when the work dir cannot be read.
    pub fn is_marked(&self, stage: &str, task: u64) -> Result<bool, StoreError> {
        self.store.exists(&self.key(stage, task))
    }

    /// Every done task of `stage`, from one listing.
    ///
    /// # Errors
    /// [`StoreError`] when the work dir cannot be listed.
    pub fn marked(&self, stage: &str) -> Result<HashSet<u64>, StoreError> {
        let prefix = format!("{}/{stage}/", self.plan_id);
        Ok(self
            .store
            .list(&prefix)?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
            .collect())
    }

    /// The records of every done task of `stage`.
    ///
    /// # Errors
    /// [`StoreError`] when the work dir cannot be read.
    pub fn records(&self, stage: &str) -> Result<Vec<(u64, serde_json::Value)>, StoreError> {
        let mut out = Vec::new();
        for task in self.marked(stage)? {
            if let Some(v) = self.store.get_json(&self.key(stage, task))? {
                out.push((task, v));
            }
        }
        out.sort_by_key(|(t, _)| *t);
        Ok(out)
    }

    /// Remove every marker of the plan.
    ///
    /// # Errors
    /// [`StoreError`] when the work dir cannot be written.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.store.erase_prefix(&format!("{}/", self.plan_id))
    }
}
