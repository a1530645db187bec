//! An OpenAI stand-in that answers at once, for load runs of the proxy
//! (`scripts/load.sh`): `cargo run --release --example instant_openai -- 18787`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/instant_openai.rs"]
mod instant_openai;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18787);
    let url = instant_openai::start(([127, 0, 0, 1], port).into()).await;
    println!("instant OpenAI at {url}");
    let _ = tokio::signal::ctrl_c().await;
}
