//! Canary analysis: turning metric observations into gate verdicts.
pub mod check;
pub mod sequential;
