//! The `qexec` command-line interface.

fn main() {
    eprintln!("qexec: the command-line interface is not built yet");
    std::process::exit(255);
}
