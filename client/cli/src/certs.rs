//! `qexec certs`: make the PKI (calls `qexec_tls`).

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use qexec_tls::{self as pki, InitOptions, Role};

use super::CliError;
use super::render::json_pretty;

const INIT_HELP: &str = "\
Writes (private keys mode 0600, directory 0700):
  ca.pem, ca-key.pem            the CA, trusted by both sides
  server.pem, server-key.pem    qexecd's certificate (SANs localhost, 127.0.0.1, ::1, --san …)
  client.pem, client-key.pem    your default identity (your user name, role admin)
  users/NAME.pem, NAME-key.pem  alice (user), bob (user), admin (admin), auditor (viewer)
The directory is --dir, else $QEXEC_CONFIG_DIR, $XDG_CONFIG_HOME/qexec or ~/.config/qexec,
which is where qexec and qexecd look by default. Copy ca.pem + a client pair to other
machines to connect from there.

Examples:
  qexec certs init
  qexec certs init --san build-01.example.org --san 10.0.0.5";

const ISSUE_HELP: &str = "\
Roles: admin (everything on every job), user (start jobs; see and control their own),
viewer (see every job and its output; start or stop nothing).

Examples:
  qexec certs issue carol --role user
  qexec --cert ~/.config/qexec/users/carol.pem --key ~/.config/qexec/users/carol-key.pem list";

const ISSUE_SERVER_HELP: &str = "\
Replaces server.pem and server-key.pem in the PKI directory with a new certificate
signed by the CA there (SANs localhost, 127.0.0.1, ::1 plus every --san, a new key).
The CA and every client certificate stay valid; restart qexecd to use it. For a
server certificate that expired or lacks the name clients dial.

Examples:
  qexec certs issue-server --san build-01.example.org --san 10.0.0.5
  qexec certs issue-server --dir /etc/qexec --san build-01";

/// `qexec certs …`.
#[derive(Debug, Subcommand)]
pub(super) enum CertsCommand {
    /// Create a CA, a server certificate and client certificates.
    #[command(after_help = INIT_HELP)]
    Init {
        /// Directory to write to (default: the qexec config dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Extra DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Replace an existing PKI (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
        /// Name in the default client certificate (default: the local user name).
        #[arg(long, value_name = "NAME")]
        client_name: Option<String>,
    },
    /// Issue another client certificate with the CA.
    #[command(after_help = ISSUE_HELP)]
    Issue {
        /// The identity (certificate CN): 1–64 of A-Z a-z 0-9 . _ @ -.
        name: String,
        /// admin, user or viewer.
        #[arg(long)]
        role: Role,
        /// PKI directory holding the CA (default: the qexec config dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Reissue only the server certificate (new names or validity), keeping the CA.
    #[command(name = "issue-server", after_help = ISSUE_SERVER_HELP)]
    IssueServer {
        /// Extra DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// PKI directory holding the CA (default: the qexec config dir).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Serialize)]
struct ServerIssuedJson {
    server: PathBuf,
    server_key: PathBuf,
    sans: Vec<String>,
}

#[derive(Serialize)]
struct IssuedJson {
    name: String,
    role: String,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Serialize)]
struct InitJson {
    dir: PathBuf,
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
    client: PathBuf,
    client_key: PathBuf,
    users: PathBuf,
}

pub(super) fn certs(json: bool, cmd: CertsCommand) -> Result<u8, CliError> {
    match cmd {
        CertsCommand::Init {
            dir,
            sans,
            force,
            client_name,
        } => {
            let dir = dir.unwrap_or_else(pki::default_dir);
            let opts = InitOptions {
                sans,
                force,
                client_name,
            };
            let p = pki::init(&dir, &opts)?;
            let text = if json {
                json_pretty(&InitJson {
                    dir: p.dir,
                    ca: p.ca,
                    server: p.server,
                    server_key: p.server_key,
                    client: p.client,
                    client_key: p.client_key,
                    users: p.users,
                })
            } else {
                format!(
                    "wrote a new PKI to {dir}\n  CA                {ca}\n  server            {server} (+ key)\n  \
                     default client    {client} (+ key, role admin)\n  users             {users}/ \
                     (alice, bob: user; admin: admin; auditor: viewer)\n\
                     next: start qexecd (it reads this directory), then `qexec run -- uname -a`\n",
                    dir = p.dir.display(),
                    ca = p.ca.display(),
                    server = p.server.display(),
                    client = p.client.display(),
                    users = p.users.display(),
                )
            };
            super::print_out(&text)?;
        }
        CertsCommand::Issue { name, role, dir } => {
            let dir = dir.unwrap_or_else(pki::default_dir);
            let p = pki::issue_client(&dir, &name, role)?;
            let text = if json {
                json_pretty(&IssuedJson {
                    name,
                    role: role.as_str().to_owned(),
                    cert: p.cert,
                    key: p.key,
                })
            } else {
                format!(
                    "issued {name} (role {role})\n  certificate  {}\n  key          {}\n\
                     use: qexec --cert {} --key {} …\n",
                    p.cert.display(),
                    p.key.display(),
                    p.cert.display(),
                    p.key.display(),
                )
            };
            super::print_out(&text)?;
        }
        CertsCommand::IssueServer { sans, dir } => {
            let dir = dir.unwrap_or_else(pki::default_dir);
            let p = pki::issue_server(&dir, &sans)?;
            let mut all = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
            all.extend(sans);
            let text = if json {
                json_pretty(&ServerIssuedJson {
                    server: p.server,
                    server_key: p.server_key,
                    sans: all,
                })
            } else {
                format!(
                    "issued a new server certificate (names {})\n  certificate  {}\n  \
                     key          {}\nnext: restart qexecd; clients need no change\n",
                    all.join(", "),
                    p.server.display(),
                    p.server_key.display(),
                )
            };
            super::print_out(&text)?;
        }
    }
    Ok(0)
}
