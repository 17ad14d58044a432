//! Text that crosses a trust boundary: strings an agent sends (cleaned once, where the server
//! takes them), login names (checked before a certificate names them), strings a terminal
//! shows (escaped), and error chains (each cause once).

/// Invisible characters that reorder or hide text (bidirectional overrides and isolates,
/// zero-width marks): shown in a terminal or a page they make one string read as another.
fn is_deceptive(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// An agent-supplied string made safe to store and show: one line, no control or invisible
/// reordering characters (a tab or newline becomes a space), at most `max` characters.
pub fn clean_line(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| !is_deceptive(*c))
        .filter_map(|c| match c {
            '\t' | '\n' | '\r' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .take(max)
        .collect()
}

/// Longest login name accepted: the common Linux limit (`LOGIN_NAME_MAX` 256 is the kernel's;
/// useradd refuses more than 32).
pub const MAX_LOGIN_LEN: usize = 32;

/// A POSIX portable user name: letters, digits, `.`, `_`, `-`, not starting with `-`, at most
/// [`MAX_LOGIN_LEN`] characters. Anything else never becomes a certificate principal.
pub fn is_login_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LOGIN_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `text` as a terminal may show it: control characters and invisible reordering characters
/// written as Rust-style escapes (`\u{1b}`, `\n`), so that text from elsewhere can neither
/// move the cursor nor forge a line. Printable text is unchanged.
pub fn escape_for_terminal(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if c.is_control() || is_deceptive(c) => {
                shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => shown.push(c),
        }
    }
    shown
}

/// An error and its causes on one line, each cause once: a cause whose text is already part of
/// what is shown (a library that both wraps and prints its source) is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let shown = e.to_string();
        if !shown.is_empty() && !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_loses_escapes_and_line_breaks_and_is_bounded() {
        let forged = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\n2026-01-01 agent.approved x alice\u{202E}";
        let cleaned = clean_line(forged, 200);
        assert!(!cleaned.chars().any(|c| c.is_control() || is_deceptive(c)));
        assert_eq!(cleaned, "ok[2J]0;pwned 2026-01-01 agent.approved x alice");
        assert_eq!(clean_line(&"é".repeat(500), 128).chars().count(), 128);
    }

    #[test]
    fn login_names_are_posix_portable_names() {
        for good in ["root", "alice", "svc_backup", "a.b-c", "_x", "U1"] {
            assert!(is_login_name(good), "{good}");
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "-rf",
            "a b",
            "root,admin",
            "a\u{1b}",
            "ünï",
            "x/y",
            "a:b",
            &long,
        ] {
            assert!(!is_login_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn terminal_text_shows_escapes_as_text() {
        assert_eq!(escape_for_terminal("plain — text"), "plain — text");
        assert_eq!(
            escape_for_terminal("a\u{1b}[31mb\nc\\d\u{202E}"),
            "a\\u{1b}[31mb\\nc\\d\\u{202e}"
        );
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug)]
        struct Leaf;
        impl std::fmt::Display for Leaf {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("No such file or directory (os error 2)")
            }
        }
        impl std::error::Error for Leaf {}
        #[derive(Debug)]
        struct Echo(Leaf);
        impl std::fmt::Display for Echo {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "cannot read x: {}", self.0)
            }
        }
        impl std::error::Error for Echo {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_chain(&Echo(Leaf)),
            "cannot read x: No such file or directory (os error 2)"
        );
    }
}
