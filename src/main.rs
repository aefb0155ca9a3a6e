// An alert storm is allocation-heavy (labels, audit records, rows): mimalloc's thread-local
// free lists beat glibc malloc's arena locks and consolidation there (see docs/src/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    medic::cli::main()
}
