//! The identity model: who a verified client is (user name and role) and the rules
//! for reading it from a client certificate (spec/security.md, "Identity").

use std::fmt;
use std::str::FromStr;

/// Longest user name a client certificate may carry.
pub const MAX_NAME_LEN: usize = 64;

/// A client's role: what it may do (spec/security.md, authorization table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything on every job.
    Admin,
    /// Start jobs; operate on its own jobs only.
    User,
    /// Read-only: status, follow and list of every job.
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::User, Role::Viewer];

    /// The text form, as written in the certificate's subject OU.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {text:?}: expected one of admin, user, viewer")]
pub struct ParseRoleError {
    /// The rejected text (truncated to 64 characters).
    pub text: String,
}

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError {
                text: s.chars().take(64).collect(),
            })
    }
}

/// Who a verified client is: its user name and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// User name (subject CN).
    pub name: String,
    /// Role (subject OU).
    pub role: Role,
}

/// Why a client certificate does not carry a usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("client certificate cannot be parsed: {reason}")]
    Parse {
        /// The parser's explanation.
        reason: String,
    },
    /// The subject has no CN, several, or one that is not a valid user name.
    #[error(
        "client certificate subject CN {found:?} is not a user name \
         (exactly one CN of 1..=64 characters [A-Za-z0-9._@-]); reissue it with `qexec certs issue`"
    )]
    BadName {
        /// What was found (all CNs, joined with `,`).
        found: String,
    },
    /// The subject has no OU, several, or one that is not a role.
    #[error(
        "client certificate subject OU {found:?} is not a role \
         (exactly one of admin, user, viewer); reissue it with `qexec certs issue --role`"
    )]
    BadRole {
        /// What was found (all OUs, joined with `,`).
        found: String,
    },
    /// The certificate lacks the clientAuth extended key usage.
    #[error("certificate is not a client certificate (no extended key usage clientAuth)")]
    NotClientCert,
    /// The certificate is a CA certificate (basic constraints CA:TRUE).
    #[error(
        "client certificate is a CA certificate (basic constraints CA:TRUE); a client needs an \
         end-entity certificate from `qexec certs issue`"
    )]
    CaCertificate,
    /// The certificate's key usage does not allow signing the TLS handshake.
    #[error(
        "client certificate key usage lacks digitalSignature (it cannot sign a TLS \
         handshake); reissue it with `qexec certs issue`"
    )]
    NoDigitalSignature,
}

#[cfg(feature = "pki")]
impl Identity {
    /// Reads the identity from a (verified) client end-entity certificate: the user
    /// name from the subject CN, the role from the subject OU; the certificate must
    /// carry EKU clientAuth.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, IdentityError> {
        // spec: QX-ID-2
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Parse {
                reason: e.to_string(),
            })?;
        let eku = cert
            .extended_key_usage()
            .map_err(|e| IdentityError::Parse {
                reason: e.to_string(),
            })?;
        if !eku.is_some_and(|e| e.value.client_auth) {
            return Err(IdentityError::NotClientCert);
        }
        // spec: QX-ID-6 (webpki refuses a CA:TRUE end entity too; this says why)
        let parse = |e: x509_parser::error::X509Error| IdentityError::Parse {
            reason: e.to_string(),
        };
        if cert
            .basic_constraints()
            .map_err(parse)?
            .is_some_and(|b| b.value.ca)
        {
            return Err(IdentityError::CaCertificate);
        }
        // An absent key usage extension allows every use (RFC 5280 4.2.1.3).
        if let Some(ku) = cert.key_usage().map_err(parse)?
            && !ku.value.digital_signature()
        {
            return Err(IdentityError::NoDigitalSignature);
        }
        let subject = cert.subject();
        let cns: Vec<&str> = subject
            .iter_common_name()
            .map(|a| a.as_str().unwrap_or("<not a string>"))
            .collect();
        let ous: Vec<&str> = subject
            .iter_organizational_unit()
            .map(|a| a.as_str().unwrap_or("<not a string>"))
            .collect();
        let name = match cns.as_slice() {
            [cn] if valid_name(cn) => (*cn).to_owned(),
            _ => {
                return Err(IdentityError::BadName {
                    found: truncate(&cns.join(",")),
                });
            }
        };
        let role = match ous.as_slice() {
            [ou] => ou.parse().map_err(|_| IdentityError::BadRole {
                found: truncate(ou),
            })?,
            _ => {
                return Err(IdentityError::BadRole {
                    found: truncate(&ous.join(",")),
                });
            }
        };
        Ok(Self { name, role })
    }
}

#[cfg(feature = "pki")]
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// True when `name` may be a user name: 1..=64 characters of `[A-Za-z0-9._@-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_text_round_trips() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn names_are_checked() {
        for ok in ["alice", "a", "b.o_b-1@x", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a\0", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
