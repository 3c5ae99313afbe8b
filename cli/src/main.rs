//! The `p3ctl` binary. Everything it does lives in the `p3-cli` library, so the
//! binary is this one call (and can be built by the root package, see Cargo.toml).

/// mimalloc instead of glibc's allocator: a node allocates and frees a few
/// small buffers per message on every runtime thread, where glibc's arenas
/// cost 12 % of a node's CPU under a write load (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    p3_cli::main()
}
