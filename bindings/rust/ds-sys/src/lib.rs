//! Raw, 1:1 declarations of `include/ds_c.h`. Use the `ds` crate for a safe API.
//! Adding a C function is adding its declaration here (and a method in `ds`).
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

/// The ABI version these declarations match; `ds` refuses a library that reports another.
pub const DS_API_VERSION: u32 = 1;

pub type ds_status = c_int;
pub const DS_OK: ds_status = 0;
pub const DS_ERR_INVALID_ARGUMENT: ds_status = 1;
pub const DS_ERR_NOT_FOUND: ds_status = 2;
pub const DS_ERR_FORMAT: ds_status = 3;
pub const DS_ERR_UNSUPPORTED: ds_status = 4;
pub const DS_ERR_OUT_OF_MEMORY: ds_status = 5;
pub const DS_ERR_CONTEXT_FULL: ds_status = 6;
pub const DS_ERR_BACKEND: ds_status = 7;
pub const DS_ERR_CANCELLED: ds_status = 8;
pub const DS_ERR_INVALID_STATE: ds_status = 9;
pub const DS_ERR_INTERNAL: ds_status = 10;
pub const DS_ERR_BUFFER_TOO_SMALL: ds_status = 11;

pub const DS_BACKEND_AUTO: i32 = 0;
pub const DS_BACKEND_CPU: i32 = 1;
pub const DS_BACKEND_CUDA: i32 = 2;

pub const DS_WEIGHTS_F32: i32 = 0;
pub const DS_WEIGHTS_BF16: i32 = 1;
pub const DS_WEIGHTS_INT8: i32 = 2;
pub const DS_WEIGHTS_INT4: i32 = 3;

pub const DS_SPECULATIVE_NONE: i32 = 0;
pub const DS_SPECULATIVE_DRAFT: i32 = 1;
pub const DS_SPECULATIVE_MTP: i32 = 2;
pub const DS_SPECULATIVE_NGRAM: i32 = 3;

pub const DS_STOP_EOS: i32 = 0;
pub const DS_STOP_MAX_TOKENS: i32 = 1;
pub const DS_STOP_STOP_TOKEN: i32 = 2;
pub const DS_STOP_STOP_STRING: i32 = 3;
pub const DS_STOP_CALLBACK: i32 = 4;
pub const DS_STOP_CANCELLED: i32 = 5;
pub const DS_STOP_CONTEXT_FULL: i32 = 6;

pub const DS_PIECE_REASONING: u32 = 1;

#[repr(C)]
pub struct ds_engine {
    _private: [u8; 0],
}
#[repr(C)]
pub struct ds_session {
    _private: [u8; 0],
}

pub type ds_progress_callback =
    Option<unsafe extern "C" fn(user: *mut c_void, done: u64, total: u64, stage: *const c_char)>;
pub type ds_piece_callback = Option<
    unsafe extern "C" fn(user: *mut c_void, piece: *const c_char, len: usize, token: i32, flags: u32) -> c_int,
>;

#[repr(C)]
pub struct ds_engine_options {
    pub struct_size: u32,
    pub backend: i32,
    pub n_threads: i32,
    pub compute_dtype: i32,
    pub progress: ds_progress_callback,
    pub progress_user_data: *mut c_void,
    pub weight_format: i32,
    pub device: i32,
}

#[repr(C)]
pub struct ds_session_options {
    pub struct_size: u32,
    pub n_ctx: u32,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    pub logits_all: i32,
    pub speculative_method: i32,
    pub draft_tokens: i32,
    pub draft_adaptive: i32,
    pub draft_engine: *mut ds_engine,
    pub ngram_min: i32,
    pub ngram_max: i32,
}

#[repr(C)]
pub struct ds_model_info {
    pub struct_size: u32,
    pub model_type: [c_char; 32],
    pub n_vocab: u32,
    pub n_layers: u32,
    pub hidden_size: u32,
    pub max_position_embeddings: u32,
    pub n_mtp_layers: u32,
    pub bos_token_id: i32,
    pub eos_token_id: i32,
    pub n_parameters: u64,
    pub weight_bytes: u64,
    pub backend: [c_char; 16],
    pub has_tokenizer: i32,
    pub kv_bytes_per_token: u64,
}

#[repr(C)]
pub struct ds_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

#[repr(C)]
pub struct ds_generate_params {
    pub struct_size: u32,
    pub prompt_ids: *const i32,
    pub n_prompt_ids: usize,
    pub prompt_text: *const c_char,
    pub prompt_text_len: usize,
    pub add_special: i32,
    pub max_tokens: u32,
    pub stop_ids: *const i32,
    pub n_stop_ids: usize,
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: usize,
    pub show_special: i32,
    pub override_sampling: i32,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
}

#[repr(C)]
pub struct ds_generate_result {
    pub struct_size: u32,
    pub stop_reason: i32,
    pub n_prompt_tokens: u32,
    pub n_generated_tokens: u32,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
}

#[repr(C)]
pub struct ds_session_stats {
    pub struct_size: u32,
    pub target_passes: u64,
    pub drafted_tokens: u64,
    pub accepted_tokens: u64,
    pub mean_accepted_length: f64,
    pub draft_seconds: f64,
    pub verify_seconds: f64,
}

extern "C" {
    pub fn ds_version() -> u32;
    pub fn ds_last_error() -> *const c_char;
    pub fn ds_status_name(status: ds_status) -> *const c_char;
    pub fn ds_engine_options_init(options: *mut ds_engine_options);
    pub fn ds_engine_open(dir: *const c_char, options: *const ds_engine_options, out: *mut *mut ds_engine) -> ds_status;
    pub fn ds_engine_close(engine: *mut ds_engine);
    pub fn ds_engine_info(engine: *const ds_engine, info: *mut ds_model_info) -> ds_status;
    pub fn ds_session_options_init(options: *mut ds_session_options);
    pub fn ds_session_create(
        engine: *mut ds_engine,
        options: *const ds_session_options,
        out: *mut *mut ds_session,
    ) -> ds_status;
    pub fn ds_session_close(session: *mut ds_session);
    pub fn ds_session_append(session: *mut ds_session, ids: *const i32, n: usize) -> ds_status;
    pub fn ds_session_logits(session: *mut ds_session, logits: *mut *const f32, n_vocab: *mut usize) -> ds_status;
    pub fn ds_session_all_logits(
        session: *mut ds_session,
        logits: *mut *const f32,
        n_rows: *mut usize,
        n_vocab: *mut usize,
    ) -> ds_status;
    pub fn ds_session_next_token(session: *mut ds_session, token: *mut i32) -> ds_status;
    pub fn ds_session_truncate(session: *mut ds_session, n_tokens: usize) -> ds_status;
    pub fn ds_session_reset(session: *mut ds_session) -> ds_status;
    pub fn ds_session_n_tokens(session: *const ds_session) -> usize;
    pub fn ds_tokenize(
        engine: *const ds_engine,
        text: *const c_char,
        len: usize,
        add_special: c_int,
        ids: *mut i32,
        capacity: usize,
        n_ids: *mut usize,
    ) -> ds_status;
    pub fn ds_detokenize(
        engine: *const ds_engine,
        ids: *const i32,
        n: usize,
        buf: *mut c_char,
        capacity: usize,
        len: *mut usize,
    ) -> ds_status;
    pub fn ds_token_to_piece(
        engine: *const ds_engine,
        token: i32,
        buf: *mut c_char,
        capacity: usize,
        len: *mut usize,
    ) -> ds_status;
    pub fn ds_chat_apply(
        engine: *const ds_engine,
        messages: *const ds_chat_message,
        n: usize,
        add_generation_prompt: c_int,
        buf: *mut c_char,
        capacity: usize,
        len: *mut usize,
    ) -> ds_status;
    pub fn ds_generate_params_init(params: *mut ds_generate_params);
    pub fn ds_session_generate(
        session: *mut ds_session,
        params: *const ds_generate_params,
        on_piece: ds_piece_callback,
        user_data: *mut c_void,
        result: *mut ds_generate_result,
    ) -> ds_status;
    pub fn ds_session_cancel(session: *mut ds_session);
    pub fn ds_session_stats_get(session: *const ds_session, stats: *mut ds_session_stats) -> ds_status;
}
