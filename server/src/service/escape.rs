//! Peer-controlled text made safe for one log line (spec: QX-SRV-13): control
//! characters (newline, carriage return, ESC, BEL, …) and backslashes are written as
//! Rust escapes (`\n`, `\u{1b}`, `\\`), so a peer cannot end a log line, forge the
//! next one or drive the terminal that shows the log.

use std::fmt;

/// Longest argv or cwd text an audit line carries, in bytes of the escaped form;
/// longer text is cut and says how many bytes of the request were left out.
pub(crate) const MAX_AUDIT_TEXT: usize = 512;

/// Displays its text with control characters and backslashes escaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Esc<'a>(pub(crate) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// A byte string (not necessarily UTF-8) escaped and cut to [`MAX_AUDIT_TEXT`]:
/// invalid UTF-8 shows as U+FFFD.
pub(crate) fn bytes(b: &[u8]) -> String {
    truncate(escape_head(b), b.len())
}

/// The escaped form of the first [`MAX_AUDIT_TEXT`] bytes of `b` (more could never
/// be shown).
fn escape_head(b: &[u8]) -> String {
    let head = &b[..b.len().min(MAX_AUDIT_TEXT + 1)];
    Esc(&String::from_utf8_lossy(head)).to_string()
}

/// What the audit line of a `Start` shows: its argv and cwd, escaped and cut.
#[derive(Debug)]
pub(crate) struct StartAudit {
    pub(crate) argv: String,
    pub(crate) cwd: String,
}

impl StartAudit {
    pub(crate) fn of(r: &qexec_protocol::StartRequest) -> Self {
        Self {
            argv: argv(&r.argv),
            cwd: r.cwd.as_deref().map_or_else(|| "-".to_owned(), bytes),
        }
    }
}

/// An argv as one escaped line: the arguments quoted (`"` inside one is escaped),
/// separated by spaces, cut to [`MAX_AUDIT_TEXT`].
pub(crate) fn argv(argv: &[Vec<u8>]) -> String {
    let total = argv.iter().map(Vec::len).sum();
    let mut out = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let text = escape_head(a);
        out.push('"');
        out.push_str(&text.replace('"', "\\\""));
        out.push('"');
        if out.len() > MAX_AUDIT_TEXT {
            break;
        }
    }
    truncate(out, total)
}

/// Cuts `text` (the escaped form of `original_len` bytes) to [`MAX_AUDIT_TEXT`] at a
/// character boundary, saying how much was left out.
fn truncate(mut text: String, original_len: usize) -> String {
    if text.len() <= MAX_AUDIT_TEXT {
        return text;
    }
    let mut cut = MAX_AUDIT_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("…(cut; {original_len} bytes in all)"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_backslashes_are_escaped() {
        let forged =
            "x\n2026-12-01T00:00:00Z  INFO qexec::audit: user=bob result=ok\r\u{1b}[2J\u{7}\\";
        let shown = Esc(forged).to_string();
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(
            shown,
            "x\\n2026-12-01T00:00:00Z  INFO qexec::audit: user=bob result=ok\\r\\u{1b}[2J\\u{7}\\\\"
        );
        // Printable non-ASCII text stays readable.
        assert_eq!(Esc("café ☕").to_string(), "café ☕");
    }

    #[test]
    fn argv_is_quoted_escaped_and_cut() {
        let a = argv(&[
            b"/bin/echo".to_vec(),
            b"a \"b\"\nc".to_vec(),
            vec![0xff, 0x1b],
        ]);
        assert_eq!(a, "\"/bin/echo\" \"a \\\"b\\\"\\nc\" \"\u{fffd}\\u{1b}\"");
        let long = argv(&[vec![b'x'; 100_000]]);
        assert!(long.len() < MAX_AUDIT_TEXT + 64, "{}", long.len());
        assert!(long.ends_with("…(cut; 100000 bytes in all)"), "{long}");
        let many = argv(&vec![b"y".to_vec(); 4096]);
        assert!(many.len() < MAX_AUDIT_TEXT + 64);
        assert!(many.ends_with("(cut; 4096 bytes in all)"), "{many}");
        assert_eq!(bytes(b"/tmp/\x07d"), "/tmp/\\u{7}d");
    }
}
