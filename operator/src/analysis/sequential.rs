//! Anytime-valid sequential tests comparing canary with primary.
