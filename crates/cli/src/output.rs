//! Small helpers for printing tables and times, and for printing text that came from
//! elsewhere (the server, agents, other users) so that it cannot drive the terminal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// "12s ago", "5m ago", "3h ago", "2d ago".
pub fn ago(ms: i64) -> String {
    let secs = ((now_ms() - ms).max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// RFC 3339 UTC, to the second.
pub fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Text from elsewhere (event details, reasons, facts, names), as it may reach a terminal:
/// control characters shown as escapes (`\u{1b}`), so it can neither move the cursor nor
/// forge a line. Every such string the CLI prints goes through here.
pub fn shown(text: &str) -> String {
    postern_protocol::text::escape_for_terminal(text)
}

/// Words longer than this are cut when echoed in a message.
const MAX_WORD: usize = 200;

/// `text` with any overlong word (an argument or value echoed back, a 100 KB one) cut to its
/// start and its length, so that one message stays one readable line.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_WORD {
        return text.to_owned();
    }
    let mut clipped = String::with_capacity(MAX_WORD * 2);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().count() > MAX_WORD {
            let start: String = word.chars().take(64).collect();
            out.push_str(&format!("{start}… ({} bytes in all)", word.len()));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut clipped);
            clipped.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut clipped);
    clipped
}

/// An error as the user sees it: each cause once, overlong words cut, and nothing that could
/// drive the terminal (a server's or a file's text may be in it).
pub fn error_text(error: &anyhow::Error) -> String {
    let text = postern_protocol::text::error_chain(error.as_ref());
    let lines: Vec<String> = clip(&text).lines().map(shown).collect();
    lines.join("\n")
}

/// Prints rows as aligned columns under a header; every cell is [`shown`].
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shown(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in &rows {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_word_is_cut_and_the_rest_kept() {
        let long = "x".repeat(100_000);
        let clipped = clip(&format!("no agent matches \"{long}\" here"));
        assert!(clipped.len() < 200, "{clipped}");
        assert!(clipped.starts_with("no agent matches \"xxx"), "{clipped}");
        assert!(clipped.ends_with("(100002 bytes in all) here"), "{clipped}");
        assert_eq!(clip("short text"), "short text");
    }
}
