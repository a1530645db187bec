//! A chat's title: set by hand, or else its first question, cut short.

use super::Turn;

/// The longest title a first question gives (characters).
pub const AUTO_TITLE_CHARS: usize = 60;
/// The longest title a caller may set (characters).
pub const MAX_TITLE_CHARS: usize = 200;

/// The title a turn's first question gives a chat: its text on one line, cut at a word
/// boundary to at most 60 characters (mid-word only when its first word is longer), or
/// `None` when the turn asked no text (a tool's result, an image alone).
pub fn auto_title(turn: &Turn) -> Option<String> {
    let text = turn.asked.iter().find_map(|asked| asked.user())?.text();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut title = String::new();
    for word in words {
        let needed = usize::from(!title.is_empty()) + word.chars().count();
        if title.chars().count() + needed > AUTO_TITLE_CHARS {
            if title.is_empty() {
                title = word.chars().take(AUTO_TITLE_CHARS).collect();
            }
            break;
        }
        if !title.is_empty() {
            title.push(' ');
        }
        title.push_str(word);
    }
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(text: &str) -> Turn {
        Turn::question(None, text.to_owned(), None, String::new())
    }

    #[test]
    fn a_first_question_is_cut_at_a_word_boundary_within_sixty_characters() {
        assert_eq!(
            auto_title(&asked("Plan a trip")).as_deref(),
            Some("Plan a trip")
        );
        let long = "How do I keep a conversation in Redis when my function runs on Lambda";
        let title = auto_title(&asked(long)).unwrap();
        assert_eq!(
            title,
            "How do I keep a conversation in Redis when my function runs"
        );
        assert!(title.chars().count() <= AUTO_TITLE_CHARS);
        assert_eq!(
            auto_title(&asked("  many\n\nlines\tand   spaces ")).as_deref(),
            Some("many lines and spaces")
        );
        let word = "x".repeat(80);
        assert_eq!(auto_title(&asked(&word)).unwrap().len(), 60);
        assert_eq!(auto_title(&asked("ééé")).as_deref(), Some("ééé"));
        assert_eq!(auto_title(&asked("   ")), None);
    }
}
