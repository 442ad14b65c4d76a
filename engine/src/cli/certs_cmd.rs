//! `vergent certs`: a development CA and the certificates it issues.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Subcommand;

use super::Failure;
use crate::certs::{self, Authority, LEAF_DAYS_DEFAULT, LeafSpec};
use crate::protocol::Role;

#[derive(Debug, Subcommand)]
pub(crate) enum CertsCommand {
    /// Create a CA (ca.crt, ca.key) and the `admin` client certificate.
    Init {
        /// Where to write the certificates.
        #[arg(long, default_value = "certs", value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate (NAME.crt, NAME.key).
    Node {
        /// The node's name, as given to `vergent serve --name`.
        name: String,
        /// Where the CA is and the certificate goes.
        #[arg(long, default_value = "certs", value_name = "DIR")]
        dir: PathBuf,
        /// An IP address clients and peers dial the node at (repeatable); 127.0.0.1 if
        /// neither --ip nor --dns is given. A loopback address adds the name localhost.
        #[arg(long, value_name = "IP")]
        ip: Vec<IpAddr>,
        /// A DNS name the node is dialled at (repeatable); the node's name is always included.
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = LEAF_DAYS_DEFAULT)]
        days: u32,
        /// Replace an existing certificate of that name.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate (NAME.crt, NAME.key).
    Client {
        /// The client's name, as given to `--user`.
        name: String,
        /// Where the CA is and the certificate goes.
        #[arg(long, default_value = "certs", value_name = "DIR")]
        dir: PathBuf,
        /// Make it an admin certificate (repair, leave and other administrative commands).
        #[arg(long)]
        admin: bool,
        /// Validity in days.
        #[arg(long, default_value_t = LEAF_DAYS_DEFAULT)]
        days: u32,
        /// Replace an existing certificate of that name.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(command: CertsCommand) -> Result<(), Failure> {
    match command {
        CertsCommand::Init { dir, force } => {
            certs::init(&dir, force)?;
            println!("created CA {}", certs::ca_path(&dir).display());
            println!(
                "issued admin client certificate {}",
                certs::paths(&dir, certs::ADMIN_NAME).0.display()
            );
        }
        CertsCommand::Node {
            name,
            dir,
            mut ip,
            mut dns,
            days,
            force,
        } => {
            let authority = Authority::load(&dir)?;
            if ip.is_empty() && dns.is_empty() {
                ip.push(IpAddr::from([127, 0, 0, 1]));
            }
            // A node dialled on a loopback address is dialled as localhost too.
            if ip.iter().any(IpAddr::is_loopback) && !dns.iter().any(|d| d == "localhost") {
                dns.push("localhost".to_string());
            }
            let mut spec = LeafSpec::new(&name, Role::Node, days);
            spec.ips = ip;
            spec.dns = dns;
            let (cert, _) = authority.issue_to(&dir, &spec, force)?;
            let mut names: Vec<String> = vec![name.clone()];
            names.extend(spec.dns.iter().cloned());
            names.extend(spec.ips.iter().map(IpAddr::to_string));
            println!(
                "issued node certificate {} for {} (valid {days} days)",
                cert.display(),
                names.join(", ")
            );
        }
        CertsCommand::Client {
            name,
            dir,
            admin,
            days,
            force,
        } => {
            let authority = Authority::load(&dir)?;
            let role = if admin { Role::Admin } else { Role::Client };
            let (cert, _) = authority.issue_to(&dir, &LeafSpec::new(&name, role, days), force)?;
            println!(
                "issued {role} certificate {} (valid {days} days)",
                cert.display()
            );
        }
    }
    Ok(())
}
