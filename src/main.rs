fn main() -> std::process::ExitCode {
    medic::cli::main()
}
