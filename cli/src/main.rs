//! The `p3ctl` binary. Everything it does lives in the `p3-cli` library, so the
//! binary is this one call (and can be built by the root package, see Cargo.toml).

fn main() -> std::process::ExitCode {
    p3_cli::main()
}
