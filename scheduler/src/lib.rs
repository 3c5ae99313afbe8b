//! # p3-scheduler — parallel jobs as conventions on the object space
//!
//! The P³ programming model (`main` / `compute` / `divide` / `restart` /
//! `checkpoint`), work stealing and termination detection, built only from reads
//! and writes of objects. Its contents arrive with the parallel-jobs issue; the
//! crate exists now so the workspace already has the shape of the architecture.
//!
//! What it must never do: talk to other nodes except through the object space.
