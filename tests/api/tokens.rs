//! The token estimate against OpenAI's own tokenizer (o200k): it may run over, never more
//! than 5% under, on English prose, code and CJK text.

use chat_proxy::tokens::estimate;

/// The estimate divided by o200k's count, for each paragraph of `text` and for the whole.
fn ratios(text: &str) -> (Vec<f64>, f64) {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let ratio = |piece: &str| estimate(piece) as f64 / bpe.encode_ordinary(piece).len() as f64;
    let pieces: Vec<f64> = text
        .split("\n\n")
        .filter(|piece| piece.trim().len() > 40)
        .map(ratio)
        .collect();
    (pieces, ratio(text))
}

fn assert_never_far_under(name: &str, text: &str) {
    let (pieces, whole) = ratios(text);
    let worst = pieces.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = pieces.iter().copied().fold(0.0, f64::max);
    // Shown with --nocapture; BENCHMARKS.md records the figures.
    println!(
        "{name}: {} pieces, whole text estimate/actual {whole:.3}, worst piece {worst:.3} \
         ({:+.1}%), highest {highest:.3}",
        pieces.len(),
        (worst - 1.0) * 100.0
    );
    assert!(pieces.len() >= 5, "{name}: too few samples");
    assert!(
        worst >= 0.95,
        "{name}: a piece is {:.1}% under",
        (1.0 - worst) * 100.0
    );
    assert!(
        whole >= 0.95,
        "{name}: the whole is {:.1}% under",
        (1.0 - whole) * 100.0
    );
}

#[test]
fn english_is_never_more_than_5_percent_under() {
    assert_never_far_under("english", include_str!("../data/english.txt"));
}

#[test]
fn code_is_never_more_than_5_percent_under() {
    // The project's own code as it was when the estimate was checked (2026-11-26), kept
    // apart so that moving code around does not move the figure.
    let code = [
        include_str!("../data/code/turn.rs.txt"),
        include_str!("../data/code/redis.rs.txt"),
        include_str!("../data/code/budget.rs.txt"),
        include_str!("../data/code/conftest.py.txt"),
        include_str!("../data/code/http.rs.txt"),
    ]
    .join("\n\n");
    assert_never_far_under("code", &code);
}

#[test]
fn cjk_is_never_more_than_5_percent_under() {
    assert_never_far_under("cjk", include_str!("../data/cjk.txt"));
}
