//! The `vergent` command; everything lives in [`vergent::cli`].

fn main() -> std::process::ExitCode {
    vergent::cli::main()
}
