//! Safe Rust API over ds's C ABI (`include/ds_c.h`): engines, sessions, text, streaming
//! generation, speculative decoding. A thin mirror: each method is one C call plus ownership.
//!
//! Thread rules (from `ds_c.h`): an engine is immutable after opening and may be shared by any
//! number of threads, so [`Engine`] is `Send + Sync` (and cheap to clone). A session is used by one
//! thread at a time, so [`Session`] is `Send` but not `Sync`; its methods take `&mut self`.
//! [`CancelHandle`] may be used from any thread (`ds_session_cancel` is thread-safe).
//! A session keeps its engine (and draft engine) alive, so it can never outlive them.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

pub use ds_sys as sys;

/// A failed call: the `ds_status` and the library's message (`ds_last_error()`).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub status: i32,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = unsafe { CStr::from_ptr(sys::ds_status_name(self.status)) };
        write!(f, "{}: {}", name.to_string_lossy(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(status: sys::ds_status) -> Result<()> {
    if status == sys::DS_OK {
        return Ok(());
    }
    let message = unsafe { CStr::from_ptr(sys::ds_last_error()) }.to_string_lossy().into_owned();
    Err(Error { status, message })
}

fn error(status: i32, message: impl Into<String>) -> Error {
    Error { status, message: message.into() }
}

/// The library's ABI version matches these bindings' (checked when an engine opens).
pub fn check_version() -> Result<()> {
    let loaded = unsafe { sys::ds_version() };
    if loaded != sys::DS_API_VERSION {
        return Err(error(
            sys::DS_ERR_UNSUPPORTED,
            format!("libds has ABI version {}, these bindings need {}", loaded, sys::DS_API_VERSION),
        ));
    }
    Ok(())
}

// "Pass capacity, get required size": ask, then fill.
fn fetch<T: Default + Clone>(mut call: impl FnMut(*mut T, usize, *mut usize) -> sys::ds_status) -> Result<Vec<T>> {
    let mut n = 0usize;
    let status = call(std::ptr::null_mut(), 0, &mut n);
    if status != sys::DS_ERR_BUFFER_TOO_SMALL {
        check(status)?;
        return Ok(Vec::new());
    }
    let mut out = vec![T::default(); n];
    check(call(out.as_mut_ptr(), out.len(), &mut n))?;
    out.truncate(n);
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub backend: Backend,
    /// CPU threads; 0 = one per physical core this process may run on.
    pub threads: i32,
    /// How weight matrices are stored (f32 by default: exact).
    pub weights: WeightFormat,
    /// The CUDA device (ordinal) for `Backend::Cuda` and `Backend::Auto`; 0 by default.
    pub device: i32,
}

/// `ds_weight_format`: fewer bytes per weight read per token, for some accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// Exact: what the reference computes.
    #[default]
    F32,
    /// Half the bytes per token; f32 compute.
    Bf16,
    /// llama.cpp's Q8_0 blocks (8.5 bits per weight), CPU only.
    Int8,
    /// llama.cpp's Q4_0 blocks (4.5 bits per weight), CPU only.
    Int4,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { backend: Backend::Cpu, threads: 0, weights: WeightFormat::F32, device: 0 }
    }
}

struct EngineHandle(*mut sys::ds_engine);
// The C header: an engine is immutable after ds_engine_open and may be shared by any threads.
unsafe impl Send for EngineHandle {}
unsafe impl Sync for EngineHandle {}
impl Drop for EngineHandle {
    fn drop(&mut self) {
        unsafe { sys::ds_engine_close(self.0) }
    }
}

/// A loaded model. Clones share it.
#[derive(Clone)]
pub struct Engine {
    handle: Arc<EngineHandle>,
}

#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub model_type: String,
    pub n_vocab: u32,
    pub n_layers: u32,
    pub hidden_size: u32,
    pub n_mtp_layers: u32,
    pub bos_token_id: i32,
    pub eos_token_id: i32,
    pub n_parameters: u64,
    pub has_tokenizer: bool,
}

#[derive(Clone, Debug)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.to_string(), content: content.to_string() }
    }
}

fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| error(sys::DS_ERR_INVALID_ARGUMENT, format!("{} contains a NUL byte", what)))
}

impl Engine {
    /// Opens a Hugging Face model folder.
    pub fn open(dir: impl AsRef<Path>, options: &EngineOptions) -> Result<Engine> {
        check_version()?;
        let dir = c_string(&dir.as_ref().to_string_lossy(), "the model path")?;
        let mut o = std::mem::MaybeUninit::<sys::ds_engine_options>::uninit();
        let mut o = unsafe {
            sys::ds_engine_options_init(o.as_mut_ptr());
            o.assume_init()
        };
        o.backend = match options.backend {
            Backend::Auto => sys::DS_BACKEND_AUTO,
            Backend::Cpu => sys::DS_BACKEND_CPU,
            Backend::Cuda => sys::DS_BACKEND_CUDA,
        };
        o.n_threads = options.threads;
        o.device = options.device;
        o.weight_format = match options.weights {
            WeightFormat::F32 => sys::DS_WEIGHTS_F32,
            WeightFormat::Bf16 => sys::DS_WEIGHTS_BF16,
            WeightFormat::Int8 => sys::DS_WEIGHTS_INT8,
            WeightFormat::Int4 => sys::DS_WEIGHTS_INT4,
        };
        let mut engine = std::ptr::null_mut();
        check(unsafe { sys::ds_engine_open(dir.as_ptr(), &o, &mut engine) })?;
        Ok(Engine { handle: Arc::new(EngineHandle(engine)) })
    }

    pub fn info(&self) -> Result<ModelInfo> {
        let mut i: sys::ds_model_info = unsafe { std::mem::zeroed() };
        i.struct_size = std::mem::size_of::<sys::ds_model_info>() as u32;
        check(unsafe { sys::ds_engine_info(self.handle.0, &mut i) })?;
        let model_type = unsafe { CStr::from_ptr(i.model_type.as_ptr()) }.to_string_lossy().into_owned();
        Ok(ModelInfo {
            model_type,
            n_vocab: i.n_vocab,
            n_layers: i.n_layers,
            hidden_size: i.hidden_size,
            n_mtp_layers: i.n_mtp_layers,
            bos_token_id: i.bos_token_id,
            eos_token_id: i.eos_token_id,
            n_parameters: i.n_parameters,
            has_tokenizer: i.has_tokenizer != 0,
        })
    }

    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>> {
        fetch(|out, cap, n| unsafe {
            sys::ds_tokenize(self.handle.0, text.as_ptr() as *const c_char, text.len(), add_special as c_int, out, cap, n)
        })
    }

    pub fn detokenize(&self, ids: &[i32]) -> Result<String> {
        let bytes: Vec<u8> = fetch(|out, cap, n| unsafe {
            sys::ds_detokenize(self.handle.0, ids.as_ptr(), ids.len(), out as *mut c_char, cap, n)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// One token's bytes (possibly part of a UTF-8 character).
    pub fn token_to_piece(&self, token: i32) -> Result<Vec<u8>> {
        fetch(|out, cap, n| unsafe { sys::ds_token_to_piece(self.handle.0, token, out as *mut c_char, cap, n) })
    }

    pub fn chat_apply(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let strings: Vec<(CString, CString)> = messages
            .iter()
            .map(|m| Ok((c_string(&m.role, "a role")?, c_string(&m.content, "a message")?)))
            .collect::<Result<_>>()?;
        let list: Vec<sys::ds_chat_message> =
            strings.iter().map(|(r, c)| sys::ds_chat_message { role: r.as_ptr(), content: c.as_ptr() }).collect();
        let bytes: Vec<u8> = fetch(|out, cap, n| unsafe {
            sys::ds_chat_apply(self.handle.0, list.as_ptr(), list.len(), add_generation_prompt as c_int, out as *mut c_char, cap, n)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn session(&self, options: &SessionOptions) -> Result<Session> {
        let mut o = std::mem::MaybeUninit::<sys::ds_session_options>::uninit();
        let mut o = unsafe {
            sys::ds_session_options_init(o.as_mut_ptr());
            o.assume_init()
        };
        o.n_ctx = options.n_ctx;
        o.temperature = options.temperature;
        o.top_k = options.top_k;
        o.top_p = options.top_p;
        o.min_p = options.min_p;
        o.seed = options.seed;
        let mut draft = None;
        match &options.speculative {
            Speculative::None => {}
            Speculative::Ngram { k } => {
                o.speculative_method = sys::DS_SPECULATIVE_NGRAM;
                o.draft_tokens = *k;
            }
            Speculative::Mtp { k } => {
                o.speculative_method = sys::DS_SPECULATIVE_MTP;
                o.draft_tokens = *k;
            }
            Speculative::Draft { engine, k } => {
                o.speculative_method = sys::DS_SPECULATIVE_DRAFT;
                o.draft_tokens = *k;
                o.draft_engine = engine.handle.0;
                draft = Some(engine.clone());
            }
        }
        let mut session = std::ptr::null_mut();
        check(unsafe { sys::ds_session_create(self.handle.0, &o, &mut session) })?;
        Ok(Session { handle: Arc::new(SessionHandle(session)), _engine: self.clone(), _draft: draft })
    }
}

/// How a session drafts tokens (speculative decoding); k tokens per model pass.
#[derive(Clone)]
pub enum Speculative {
    None,
    Ngram { k: i32 },
    Mtp { k: i32 },
    Draft { engine: Engine, k: i32 },
}

#[derive(Clone)]
pub struct SessionOptions {
    /// Context in tokens; 0 = the model's maximum (the cache grows on demand).
    pub n_ctx: u32,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    pub speculative: Speculative,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { n_ctx: 0, temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0, speculative: Speculative::None }
    }
}

struct SessionHandle(*mut sys::ds_session);
// A session may move between threads; it is used by one at a time (Session is not Sync), and
// only ds_session_cancel, which is thread-safe, is reached through CancelHandle from others.
unsafe impl Send for SessionHandle {}
unsafe impl Sync for SessionHandle {}
impl Drop for SessionHandle {
    fn drop(&mut self) {
        unsafe { sys::ds_session_close(self.0) }
    }
}

/// A conversation with its own KV cache.
pub struct Session {
    handle: Arc<SessionHandle>,
    _engine: Engine,
    _draft: Option<Engine>,
}

/// Stops a running `generate` or `append` of its session, from any thread.
#[derive(Clone)]
pub struct CancelHandle {
    handle: Arc<SessionHandle>,
}

impl CancelHandle {
    pub fn cancel(&self) {
        unsafe { sys::ds_session_cancel(self.handle.0) }
    }
}

#[derive(Clone, Debug, Default)]
pub struct GenerateParams {
    pub prompt_ids: Vec<i32>,
    pub prompt_text: String,
    /// For prompt_text: prepend BOS (chat text from chat_apply carries its own).
    pub add_special: bool,
    /// 0 = until EOS, a stop or a full context.
    pub max_tokens: u32,
    pub stop_ids: Vec<i32>,
    pub stop_strings: Vec<String>,
    pub show_special: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    StopToken,
    StopString,
    Callback,
    Cancelled,
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct GenerateResult {
    pub stop_reason: StopReason,
    pub n_prompt_tokens: u32,
    pub n_generated_tokens: u32,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

/// A piece of streamed text: whole UTF-8 characters, the token that released them, and whether
/// it is R1's reasoning (`<think>…</think>`).
pub struct Piece<'a> {
    pub text: &'a str,
    pub token: i32,
    pub reasoning: bool,
}

#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    pub target_passes: u64,
    pub drafted_tokens: u64,
    pub accepted_tokens: u64,
    pub mean_accepted_length: f64,
}

struct CallbackState<'a> {
    on_piece: &'a mut dyn FnMut(&Piece) -> bool,
    panic: Option<String>,
}

unsafe extern "C" fn piece_trampoline(user: *mut c_void, text: *const c_char, len: usize, token: i32, flags: u32) -> c_int {
    let state = &mut *(user as *mut CallbackState);
    let bytes = if len == 0 { &[][..] } else { std::slice::from_raw_parts(text as *const u8, len) };
    let text = std::str::from_utf8(bytes).unwrap_or("\u{FFFD}");
    let piece = Piece { text, token, reasoning: flags & sys::DS_PIECE_REASONING != 0 };
    // A panic must not unwind through C: catch it, stop generation, report it afterwards.
    match catch_unwind(AssertUnwindSafe(|| (state.on_piece)(&piece))) {
        Ok(stop) => stop as c_int,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            state.panic = Some(message);
            1
        }
    }
}

impl Session {
    /// Prefill (or a step): runs the tokens and keeps the last logits.
    pub fn append(&mut self, ids: &[i32]) -> Result<()> {
        check(unsafe { sys::ds_session_append(self.handle.0, ids.as_ptr(), ids.len()) })
    }

    /// The logits after the last appended token.
    pub fn logits(&mut self) -> Result<Vec<f32>> {
        let mut ptr = std::ptr::null();
        let mut n = 0usize;
        check(unsafe { sys::ds_session_logits(self.handle.0, &mut ptr, &mut n) })?;
        Ok(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
    }

    /// Samples (or takes the argmax), appends and returns the next token.
    pub fn next_token(&mut self) -> Result<i32> {
        let mut token = 0;
        check(unsafe { sys::ds_session_next_token(self.handle.0, &mut token) })?;
        Ok(token)
    }

    pub fn truncate(&mut self, n_tokens: usize) -> Result<()> {
        check(unsafe { sys::ds_session_truncate(self.handle.0, n_tokens) })
    }

    pub fn reset(&mut self) -> Result<()> {
        check(unsafe { sys::ds_session_reset(self.handle.0) })
    }

    pub fn n_tokens(&self) -> usize {
        unsafe { sys::ds_session_n_tokens(self.handle.0) }
    }

    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle { handle: self.handle.clone() }
    }

    pub fn stats(&self) -> Result<SessionStats> {
        let mut s: sys::ds_session_stats = unsafe { std::mem::zeroed() };
        s.struct_size = std::mem::size_of::<sys::ds_session_stats>() as u32;
        check(unsafe { sys::ds_session_stats_get(self.handle.0, &mut s) })?;
        Ok(SessionStats {
            target_passes: s.target_passes,
            drafted_tokens: s.drafted_tokens,
            accepted_tokens: s.accepted_tokens,
            mean_accepted_length: s.mean_accepted_length,
        })
    }

    /// Generates, calling `on_piece` for every piece of text; it returns true to stop.
    /// A panic in `on_piece` stops generation and comes back as an error.
    pub fn generate<F: FnMut(&Piece) -> bool>(&mut self, params: &GenerateParams, mut on_piece: F) -> Result<GenerateResult> {
        let stops: Vec<CString> = params.stop_strings.iter().map(|s| c_string(s, "a stop string")).collect::<Result<_>>()?;
        let stop_ptrs: Vec<*const c_char> = stops.iter().map(|s| s.as_ptr()).collect();
        let mut p = std::mem::MaybeUninit::<sys::ds_generate_params>::uninit();
        let mut p = unsafe {
            sys::ds_generate_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        p.prompt_ids = params.prompt_ids.as_ptr();
        p.n_prompt_ids = params.prompt_ids.len();
        p.prompt_text = params.prompt_text.as_ptr() as *const c_char;
        p.prompt_text_len = params.prompt_text.len();
        p.add_special = params.add_special as i32;
        p.max_tokens = params.max_tokens;
        p.stop_ids = params.stop_ids.as_ptr();
        p.n_stop_ids = params.stop_ids.len();
        p.stop_strings = stop_ptrs.as_ptr();
        p.n_stop_strings = stop_ptrs.len();
        p.show_special = params.show_special as i32;
        let mut r: sys::ds_generate_result = unsafe { std::mem::zeroed() };
        r.struct_size = std::mem::size_of::<sys::ds_generate_result>() as u32;
        let mut state = CallbackState { on_piece: &mut on_piece, panic: None };
        let status = unsafe {
            sys::ds_session_generate(self.handle.0, &p, Some(piece_trampoline), &mut state as *mut CallbackState as *mut c_void, &mut r)
        };
        if let Some(message) = state.panic {
            return Err(error(sys::DS_ERR_CANCELLED, format!("the piece callback panicked: {}", message)));
        }
        check(status)?;
        let stop_reason = match r.stop_reason {
            sys::DS_STOP_EOS => StopReason::Eos,
            sys::DS_STOP_MAX_TOKENS => StopReason::MaxTokens,
            sys::DS_STOP_STOP_TOKEN => StopReason::StopToken,
            sys::DS_STOP_STOP_STRING => StopReason::StopString,
            sys::DS_STOP_CALLBACK => StopReason::Callback,
            sys::DS_STOP_CANCELLED => StopReason::Cancelled,
            _ => StopReason::ContextFull,
        };
        Ok(GenerateResult {
            stop_reason,
            n_prompt_tokens: r.n_prompt_tokens,
            n_generated_tokens: r.n_generated_tokens,
            prefill_tokens_per_second: r.prefill_tokens_per_second,
            decode_tokens_per_second: r.decode_tokens_per_second,
        })
    }
}
