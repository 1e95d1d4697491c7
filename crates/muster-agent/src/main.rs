//! The `muster-agent` binary: everything lives in the library so tests can call it.

fn main() -> std::process::ExitCode {
    muster_agent::main()
}
