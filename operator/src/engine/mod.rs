//! The rollout engine: the pure decision core and the reconciler around it.
pub mod caches;
pub mod decide;
pub mod reconcile;
pub mod resources;
pub mod revision;
