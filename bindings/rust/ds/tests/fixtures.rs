//! The Rust binding against the golden fixtures (../shared/fixtures beside the checkout, or
//! $DS_FIXTURES_DIR), through the real libds.
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    match std::env::var("DS_FIXTURES_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../../shared/fixtures"),
    }
}

/// An I64 tensor of a fixture's reference.safetensors (header located by plain search).
fn reference_ids(fixture: &str, name: &str) -> Vec<i32> {
    let bytes = std::fs::read(fixtures().join(fixture).join("reference.safetensors")).expect("reference.safetensors");
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let entry = &header[header.find(&format!("\"{}\"", name)).expect("tensor")..];
    let offsets = &entry[entry.find("\"data_offsets\":[").unwrap() + 16..];
    let numbers: Vec<usize> = offsets[..offsets.find(']').unwrap()].split(',').map(|s| s.trim().parse().unwrap()).collect();
    bytes[8 + header_len + numbers[0]..8 + header_len + numbers[1]]
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i32)
        .collect()
}

fn open(fixture: &str) -> ds::Engine {
    ds::Engine::open(fixtures().join(fixture), &ds::EngineOptions { threads: 1, ..Default::default() }).unwrap()
}

#[test]
fn struct_sizes_match_the_c_ones() {
    use ds::sys::*;
    use std::mem::{size_of, MaybeUninit};
    unsafe {
        let mut e = MaybeUninit::<ds_engine_options>::zeroed();
        ds_engine_options_init(e.as_mut_ptr());
        assert_eq!(e.assume_init().struct_size as usize, size_of::<ds_engine_options>());
        let mut s = MaybeUninit::<ds_session_options>::zeroed();
        ds_session_options_init(s.as_mut_ptr());
        assert_eq!(s.assume_init().struct_size as usize, size_of::<ds_session_options>());
        let mut g = MaybeUninit::<ds_generate_params>::zeroed();
        ds_generate_params_init(g.as_mut_ptr());
        assert_eq!(g.assume_init().struct_size as usize, size_of::<ds_generate_params>());
        // The info struct is accepted whole: the library knows exactly this size.
        let engine = open("deepseek_v3_tiny");
        assert_eq!(engine.info().unwrap().model_type, "deepseek_v3");
    }
    assert_eq!(unsafe { ds::sys::ds_version() }, ds::sys::DS_API_VERSION);
    ds::check_version().unwrap();
}

#[test]
fn greedy_decoding_matches_transformers() {
    for fixture in ["deepseek_v3_tiny", "qwen2_tiny", "llama_tiny"] {
        let engine = open(fixture);
        let mut session = engine.session(&Default::default()).unwrap();
        session.append(&reference_ids(fixture, "input_ids")).unwrap();
        let expected = reference_ids(fixture, "greedy_tokens");
        let got: Vec<i32> = (0..expected.len()).map(|_| session.next_token().unwrap()).collect();
        assert_eq!(got, expected, "{}", fixture);
    }
}

#[test]
fn generate_from_text_and_speculative_decoding_match_transformers() {
    let fixture = "deepseek_v3_vocab_bf16";
    let engine = open(fixture);
    let ids = reference_ids(fixture, "input_ids");
    // The fixture's prompt_text tokenizes to its input_ids (BOS + text).
    assert_eq!(engine.tokenize("The capital of France is", true).unwrap(), ids);
    let expected = reference_ids(fixture, "greedy_tokens");
    for speculative in [ds::Speculative::None, ds::Speculative::Ngram { k: 3 }, ds::Speculative::Draft { engine: engine.clone(), k: 4 }] {
        let mut session = engine.session(&ds::SessionOptions { speculative, ..Default::default() }).unwrap();
        let params = ds::GenerateParams {
            prompt_text: "The capital of France is".into(),
            add_special: true,
            max_tokens: expected.len() as u32,
            ..Default::default()
        };
        let mut tokens = Vec::new();
        let mut text = String::new();
        let result = session
            .generate(&params, |p| {
                if tokens.last() != Some(&p.token) {
                    tokens.push(p.token);
                }
                text.push_str(p.text);
                false
            })
            .unwrap();
        assert_eq!(result.stop_reason, ds::StopReason::MaxTokens);
        assert_eq!(tokens, expected);
        assert_eq!(text, engine.detokenize(&expected).unwrap());
    }
}

#[test]
fn bf16_weights_option_reaches_the_library() {
    // The fixture's weights are bf16 already, so bf16 storage changes nothing: same tokens.
    let fixture = "llama_tied_bf16";
    let engine = ds::Engine::open(fixtures().join(fixture), &ds::EngineOptions { threads: 1, weights: ds::WeightFormat::Bf16, ..Default::default() }).unwrap();
    let mut session = engine.session(&Default::default()).unwrap();
    session.append(&reference_ids(fixture, "input_ids")).unwrap();
    let expected = reference_ids(fixture, "greedy_tokens");
    let got: Vec<i32> = (0..expected.len()).map(|_| session.next_token().unwrap()).collect();
    assert_eq!(got, expected);
}

#[test]
fn quantized_weights_reach_the_library() {
    // int4 on CUDA is refused by libds itself, naming why.
    let options = ds::EngineOptions { backend: ds::Backend::Cuda, weights: ds::WeightFormat::Int4, ..Default::default() };
    let err = ds::Engine::open(fixtures().join("qwen2_tiny"), &options).err().expect("int4 on CUDA must fail");
    assert!(err.to_string().contains("CPU backend only"), "{err}");
    // On the CPU, int8 runs.
    let options = ds::EngineOptions { threads: 1, weights: ds::WeightFormat::Int8, ..Default::default() };
    let engine = ds::Engine::open(fixtures().join("qwen2_tiny"), &options).unwrap();
    let mut session = engine.session(&Default::default()).unwrap();
    session.append(&reference_ids("qwen2_tiny", "input_ids")).unwrap();
    session.next_token().unwrap();
}

#[test]
fn the_device_reaches_the_library() {
    let options = ds::EngineOptions { backend: ds::Backend::Cuda, device: -1, ..Default::default() };
    let err = ds::Engine::open(fixtures().join("qwen2_tiny"), &options).err().expect("device -1 must fail");
    assert!(err.to_string().contains("device must be >= 0"), "{err}");
}

#[test]
fn streaming_stops_when_asked() {
    let engine = open("deepseek_v3_vocab_bf16");
    let mut session = engine.session(&Default::default()).unwrap();
    let params = ds::GenerateParams { prompt_ids: engine.tokenize("Hello", true).unwrap(), ..Default::default() };
    let mut seen = 0;
    let result = session
        .generate(&params, |_| {
            seen += 1;
            seen >= 3
        })
        .unwrap();
    assert_eq!(result.stop_reason, ds::StopReason::Callback);
    assert_eq!(result.n_generated_tokens, 3);
}

#[test]
fn a_panicking_callback_is_an_error_not_an_abort() {
    let engine = open("deepseek_v3_vocab_bf16");
    let mut session = engine.session(&Default::default()).unwrap();
    let params = ds::GenerateParams { prompt_ids: engine.tokenize("Hello", true).unwrap(), max_tokens: 5, ..Default::default() };
    let err = session.generate(&params, |_| panic!("boom")).unwrap_err();
    assert!(err.message.contains("boom"), "{}", err);
    // The session is still usable.
    let next = ds::GenerateParams { max_tokens: 2, ..Default::default() };
    assert_eq!(session.generate(&next, |_| false).unwrap().n_generated_tokens, 2);
}

#[test]
fn cancel_from_another_thread() {
    let engine = open("deepseek_v3_vocab_bf16");
    let mut session = engine.session(&ds::SessionOptions { n_ctx: 4096, ..Default::default() }).unwrap();
    let cancel = session.cancel_handle();
    let params = ds::GenerateParams { prompt_ids: engine.tokenize("Hello", true).unwrap(), ..Default::default() };
    let (tx, rx) = std::sync::mpsc::channel();
    let canceller = std::thread::spawn(move || {
        rx.recv().unwrap();
        cancel.cancel();
    });
    let mut sent = false;
    let result = session
        .generate(&params, |_| {
            if !sent {
                tx.send(()).unwrap();
                sent = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            false
        })
        .unwrap();
    canceller.join().unwrap();
    assert_eq!(result.stop_reason, ds::StopReason::Cancelled);
}

#[test]
fn a_bad_model_path_is_an_error() {
    let err = ds::Engine::open("/nonexistent/model", &Default::default()).err().unwrap();
    assert_eq!(err.status, ds::sys::DS_ERR_NOT_FOUND);
    assert!(err.message.contains("/nonexistent/model"), "{}", err);
    assert!(err.to_string().starts_with("DS_ERR_NOT_FOUND"));
}

#[test]
fn a_session_keeps_its_engine_alive() {
    let mut session = {
        let engine = open("qwen2_tiny");
        engine.session(&Default::default()).unwrap()
    }; // the Engine value is gone; the session still holds the model
    session.append(&[1, 2, 3]).unwrap();
    assert!(session.next_token().is_ok());
}

#[test]
fn chat_template_matches_the_fixture_case() {
    let engine = open("deepseek_v3_vocab_bf16");
    let text = engine.chat_apply(&[ds::ChatMessage::new("user", "What is 2+2?")], true).unwrap();
    assert_eq!(text, "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>");
    assert_eq!(engine.tokenize(&text, false).unwrap(), vec![0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804]);
}
