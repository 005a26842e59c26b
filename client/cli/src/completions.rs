//! `qexec completions`: shell completion scripts (clap_complete).

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CliError};

pub(super) const HELP: &str = "\
Examples:
  qexec completions bash > ~/.local/share/bash-completion/completions/qexec
  qexec completions zsh > ~/.zfunc/_qexec
  qexec completions fish > ~/.config/fish/completions/qexec.fish";

/// Arguments of `qexec completions`.
#[derive(Debug, Args)]
pub(super) struct CompletionsArgs {
    /// The shell.
    shell: Shell,
}

pub(super) fn completions(args: CompletionsArgs) -> Result<u8, CliError> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "qexec", &mut out);
    super::print_out(&String::from_utf8_lossy(&out))?;
    Ok(0)
}
