//! What every benchmark does with `--help` / `-h`: print its usage and stop, never run.

/// Prints `usage` and exits 0 when the command line asks for help.
pub fn or_help(usage: &str) {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        std::process::exit(0);
    }
}
