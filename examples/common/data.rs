//! What the benchmarks share: finding their data.

/// Exits with a message saying what data the benchmark needs and where, when it is missing.
pub fn or_exit(dir: &str, file: &str, what: &str) {
    let path = std::path::Path::new(dir).join(file);
    if !path.exists() {
        eprintln!(
            "{} not found: this benchmark reads {what} from {dir}. The datasets live beside the \
             project in ../shared/datasets (never copied into it); pass --data DIR to read them elsewhere.",
            path.display()
        );
        std::process::exit(2);
    }
}
