//! What free text AIMS accepts from callers (descriptions, labels, intents, reasons): what a
//! person reading it sees is what it is. Control characters are refused, and so are the
//! invisible formatting characters that make two strings look alike or reorder how text is
//! displayed ("Trojan Source"): bidirectional overrides, embeddings and isolates, zero-width
//! characters, the byte-order mark, the soft hyphen.

/// Whether `c` may not appear in caller-supplied text.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
        )
}

/// Whether `text` is free of hidden characters (a line break allowed where `multiline`).
pub fn is_visible(text: &str, multiline: bool) -> bool {
    !text
        .chars()
        .any(|c| is_hidden(c) && !(multiline && c == '\n'))
}

/// Whether `text` is at most `max_chars` characters (as JSON Schema's `maxLength` counts, so
/// openapi.json can state the bound exactly) and free of hidden characters, on one line.
pub fn is_visible_within(text: &str, max_chars: usize) -> bool {
    text.chars().count() <= max_chars && is_visible(text, false)
}

/// Whether `text` is 1 to `max_chars` characters with no control character: the looser rule of
/// values a standard defines as printable text (SSF's stream descriptions, status reasons and
/// verification states), where AIMS does not second-guess formatting characters.
pub fn is_printable_within(text: &str, max_chars: usize) -> bool {
    !text.is_empty() && text.chars().count() <= max_chars && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alike_and_reordering_characters_are_hidden() {
        for c in [
            '\n', '\u{7}', '\u{200B}', '\u{200D}', '\u{202E}', '\u{2066}', '\u{FEFF}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', 'é', 'а', ' ', '€', '中'] {
            assert!(!is_hidden(c), "{c:?}");
        }
        assert!(is_visible("fix the build", false));
        assert!(is_visible("line one\nline two", true));
        assert!(!is_visible("line one\nline two", false));
        assert!(!is_visible("abc\u{202E}fed", true));
    }

    #[test]
    fn bounded_text_counts_characters_not_bytes() {
        // 256 characters of three bytes each: within a 256-character bound.
        assert!(is_visible_within(&"€".repeat(256), 256));
        assert!(!is_visible_within(&"€".repeat(257), 256));
        assert!(is_visible_within("", 256));
        assert!(!is_visible_within("revoked\u{7}", 256));
        assert!(!is_visible_within("two\nlines", 256));
        assert!(is_printable_within(&"€".repeat(256), 256));
        assert!(!is_printable_within(&"€".repeat(257), 256));
        assert!(!is_printable_within("", 256));
        assert!(!is_printable_within("state\u{85}", 256));
        assert!(is_printable_within("read\u{202E}me", 256));
    }
}
