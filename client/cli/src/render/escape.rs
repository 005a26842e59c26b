//! Neutralising server text before it reaches a terminal, and shell quoting
//! (spec: QX-SEC-6).

use std::fmt::Write as _;

/// True for the characters a terminal may act on: C0 controls (newline and tab
/// included), DEL and the C1 controls U+0080..U+009F.
fn is_control(c: char) -> bool {
    c.is_control()
}

/// Appends the `$'…'` escape of one byte (bash's ANSI-C quoting).
fn push_byte_escape(out: &mut String, b: u8) {
    match b {
        0x1b => out.push_str("\\e"),
        0x07 => out.push_str("\\a"),
        0x08 => out.push_str("\\b"),
        b'\t' => out.push_str("\\t"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        0x0b => out.push_str("\\v"),
        0x0c => out.push_str("\\f"),
        _ => {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Neutralises text from the server before it reaches a terminal (spec: QX-SEC-6):
/// every control character (C0 — newline included —, DEL, C1) and every byte of an
/// invalid UTF-8 sequence becomes a visible `$'…'` escape (`\e`, `\a`, `\r`,
/// `\xHH`), as `ls --quoting-style=shell-escape` shows them; everything else is
/// unchanged. Job *output* is never passed through this: it is the job's bytes.
pub fn escape_text(bytes: &[u8]) -> String {
    fn flush(out: &mut String, run: &mut String) {
        if !run.is_empty() {
            out.push_str("$'");
            out.push_str(run);
            out.push('\'');
            run.clear();
        }
    }
    let mut out = String::with_capacity(bytes.len());
    // Escapes waiting to be closed into one `$'…'` group.
    let mut run = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_control(c) {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    push_byte_escape(&mut run, b);
                }
            } else {
                flush(&mut out, &mut run);
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_byte_escape(&mut run, b);
        }
    }
    flush(&mut out, &mut run);
    out
}

/// [`escape_text`] of a string.
pub fn escape_str(text: &str) -> String {
    if text.chars().any(is_control) {
        escape_text(text.as_bytes())
    } else {
        text.to_owned()
    }
}

/// Quotes one argument for display the way a POSIX shell would need it; control
/// characters and invalid UTF-8 use bash's `$'…'` form, so nothing reaches the
/// terminal raw (spec: QX-SEC-6).
fn shell_quote(arg: &[u8]) -> String {
    let text = match std::str::from_utf8(arg) {
        Ok(text) if !text.chars().any(is_control) => text,
        _ => {
            // bash's $'…' form shows every byte exactly.
            let mut s = String::from("$'");
            for chunk in arg.utf8_chunks() {
                for c in chunk.valid().chars() {
                    if is_control(c) {
                        let mut buf = [0u8; 4];
                        for &b in c.encode_utf8(&mut buf).as_bytes() {
                            push_byte_escape(&mut s, b);
                        }
                    } else if c == '\'' || c == '\\' {
                        s.push('\\');
                        s.push(c);
                    } else {
                        s.push(c);
                    }
                }
                for &b in chunk.invalid() {
                    push_byte_escape(&mut s, b);
                }
            }
            s.push('\'');
            return s;
        }
    };
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The command line of a job, shell-quoted for reading.
pub fn command_text(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}
