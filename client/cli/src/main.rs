//! The `qexec` command-line interface; see `qexec --help` and client/CLI.md.

fn main() -> std::process::ExitCode {
    qexec_cli::main()
}
