//! The HTTP API (`docs/http.md`) end to end: real `p3ctl` node processes on
//! 127.0.0.1, spoken to over HTTP with a plain blocking client (`ureq`).
//! Objects written through one node are read through another, blocking
//! calls are satisfied by writes from other nodes, locks move between
//! clients, watches stream Server-Sent Events, jobs run, bad input gets one
//! line of JSON, a 100 MiB value streams through without the node's memory
//! growing with it, metrics count, and every route the OpenAPI document
//! lists exists.

#[path = "../common/mod.rs"]
mod common;

mod client;
mod coordination;
mod errors;
mod node;
mod objects;
mod promises;
