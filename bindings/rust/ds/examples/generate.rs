//! cargo run --example generate -- MODEL_DIR "Why is the sky blue?"
use std::io::Write;

fn main() -> Result<(), ds::Error> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, prompt) = (&args[1], args.get(2).map(String::as_str).unwrap_or("Hello"));
    let engine = ds::Engine::open(dir, &ds::EngineOptions::default())?;
    let text = engine.chat_apply(&[ds::ChatMessage::new("user", prompt)], true)?;
    let mut session = engine.session(&ds::SessionOptions::default())?;
    let params = ds::GenerateParams { prompt_text: text, max_tokens: 64, ..Default::default() };
    let result = session.generate(&params, |piece| {
        print!("{}", piece.text);
        std::io::stdout().flush().ok();
        false // true stops
    })?;
    println!("\n[{} tokens at {:.1} tok/s]", result.n_generated_tokens, result.decode_tokens_per_second);
    Ok(())
}
