//! Token estimates for text upstream has not counted yet: the new message, the prompts,
//! turns stored before turns carried their counts. An estimate must never fall short of the
//! real count by much (a prompt that is larger than its estimate can overflow the budget),
//! so it errs on the high side: measured against OpenAI's o200k tokenizer, it is at most a
//! few percent under on English, code and CJK text (`tests`, and the note in BENCHMARKS.md).
//!
//! No tokenizer is loaded: a vocabulary would cost megabytes and milliseconds of cold start
//! for a number that upstream reports exactly one turn later.

use crate::chat::{Part, UserContent};

/// What OpenAI's chat format adds around each message.
pub const PER_MESSAGE: u32 = 4;
/// What it adds once, to prime the reply.
pub const PER_REQUEST: u32 = 3;
/// An image at `detail: low`.
const IMAGE_LOW: u32 = 85;
/// An image at `high` or `auto` detail, at its largest usual size (2048 x 768 tiles).
const IMAGE_HIGH: u32 = 1105;

/// The tokens of `text`, estimated on the high side.
pub fn estimate(text: &str) -> u32 {
    let mut tokens = 0u32;
    let mut chars = text.chars().peekable();
    let mut after_line_break = false;
    while let Some(c) = chars.next() {
        let line_break = c == '\n' || c == '\r';
        if c.is_ascii_alphanumeric() {
            let mut word = String::from(c);
            while let Some(next) = chars.next_if(char::is_ascii_alphanumeric) {
                word.push(next);
            }
            tokens += estimate_word(&word);
        } else if c == ' ' || c == '\t' {
            // One space belongs to the next word, and indentation to the line break before
            // it; longer runs cost a token for each eight.
            let length = 1 + run(&mut chars, |c| c == ' ' || c == '\t');
            let free = if after_line_break { 4 } else { 1 };
            tokens += length.saturating_sub(free).div_ceil(8);
        } else if line_break {
            tokens += 1;
            run(&mut chars, |c| c == '\n' || c == '\r');
        } else if c.is_ascii() {
            // Punctuation and symbols: runs like `::`, `->` or `));` are often one token.
            let length = 1 + run(&mut chars, |c| c.is_ascii_punctuation());
            tokens += length.div_ceil(2);
        } else if is_cjk(c) {
            tokens += 1;
        } else {
            // Accented letters, other scripts, emoji: about a token for each two bytes.
            tokens += (c.len_utf8() as u32).div_ceil(2);
        }
        after_line_break = line_break;
    }
    tokens
}

/// A run of ASCII letters and digits, the space before it included.
fn estimate_word(word: &str) -> u32 {
    let length = word.len() as u32;
    let letters = word.bytes().filter(u8::is_ascii_alphabetic).count();
    if letters == word.len() {
        // A word: one token up to 6 letters, one more for each 4 after.
        1 + length.saturating_sub(3) / 4
    } else if letters == 0 {
        // Numbers are cut into groups of up to three digits.
        length.div_ceil(3)
    } else {
        // Letters and digits mixed (hex, ids, `u128`): they split at almost every change.
        length
    }
}

/// Skips the characters that follow while `belongs` holds; says how many.
fn run(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    belongs: impl Fn(char) -> bool,
) -> u32 {
    let mut length = 0;
    while chars.peek().is_some_and(|c| belongs(*c)) {
        chars.next();
        length += 1;
    }
    length
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3400..=0x4DBF   // CJK Extension A
        | 0x4E00..=0x9FFF   // CJK Unified Ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK Compatibility Ideographs
        | 0xFF00..=0xFFEF   // Half- and full-width forms
        | 0x3000..=0x303F   // CJK punctuation
    )
}

/// A user message's tokens as it is sent: its text, its images, the message's framing.
pub fn estimate_user(content: &UserContent) -> u32 {
    let body = match content {
        UserContent::Text(text) => estimate(text),
        UserContent::Parts(parts) => parts
            .iter()
            .map(|part| match part {
                Part::Text { text } => estimate(text),
                Part::ImageUrl { image_url } => match image_url.detail.as_deref() {
                    Some("low") => IMAGE_LOW,
                    _ => IMAGE_HIGH,
                },
            })
            .sum(),
    };
    body + PER_MESSAGE
}

/// A system or assistant message's tokens as it is sent.
pub fn estimate_message(text: &str) -> u32 {
    estimate(text) + PER_MESSAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_numbers_and_space_are_counted() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("Hello world"), 2);
        assert_eq!(estimate("internationalization"), 5);
        assert_eq!(estimate("1234567"), 3);
        assert_eq!(estimate("a, b."), 4);
        assert_eq!(estimate("x        y"), 3);
        assert_eq!(estimate("x\n    y"), 3);
        assert_eq!(estimate("日本語"), 3);
        assert!(estimate("héllo wörld 🙂") >= 4);
    }

    #[test]
    fn images_cost_by_detail() {
        let low = UserContent::Parts(vec![Part::ImageUrl {
            image_url: crate::chat::ImageRef {
                url: "https://x/a.png".into(),
                detail: Some("low".into()),
            },
        }]);
        assert_eq!(estimate_user(&low), IMAGE_LOW + PER_MESSAGE);
    }
}
