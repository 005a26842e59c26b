//! `qexecd`, the qexec server.

fn main() {
    eprintln!("qexecd: the network service is not built yet");
    std::process::exit(1);
}
