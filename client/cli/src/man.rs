//! `qexec man`: the manual pages, generated from the same clap definitions as `--help`
//! (clap_mangen), so the two never disagree.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};

use super::{Cli, CliError};

pub(super) const HELP: &str = "\
Writes qexec.1 and one page per command (qexec-run.1, qexec-certs-init.1, …) to DIR,
made from the same definitions as --help. Install them where man looks:

Examples:
  qexec man --out ~/.local/share/man/man1 && man qexec-run
  sudo qexec man --out /usr/local/share/man/man1";

/// Arguments of `qexec man`.
#[derive(Debug, Args)]
pub(super) struct ManArgs {
    /// Directory to write the pages to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Writes the page of `cmd` as `name.1`, then those of its subcommands.
fn write_pages(
    cmd: clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), CliError> {
    // clap takes a `'static` name without its `string` feature; a few short strings
    // for a process that exits right after.
    let cmd = cmd.name(&*Box::leak(name.to_owned().into_boxed_str()));
    let mut page = Vec::new();
    let io = |source| CliError::Output {
        what: "the manual page",
        source,
    };
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(io)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).map_err(io)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(sub.clone(), &sub_name, dir, written)?;
    }
    Ok(())
}

pub(super) fn man(args: ManArgs) -> Result<u8, CliError> {
    std::fs::create_dir_all(&args.out).map_err(|source| CliError::Output {
        what: "the manual directory",
        source,
    })?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, "qexec", &args.out, &mut written)?;
    let list: Vec<String> = written
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    super::print_out(&format!(
        "wrote {} pages to {}: {}\n",
        written.len(),
        args.out.display(),
        list.join(" ")
    ))?;
    Ok(0)
}
