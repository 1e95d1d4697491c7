//! The `muster` binary: parses the command line and hands over to the library.

/// mimalloc rather than glibc's malloc: the request path allocates from every worker thread,
/// and glibc's arenas spent about a fifth of the server's CPU on heartbeats (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    muster::run()
}
