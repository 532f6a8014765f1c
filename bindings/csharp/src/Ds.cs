// C# API of ds, an inference engine for the DeepSeek-R1 family: a thin mirror of include/ds_c.h.
// P/Invoke declarations (Native), SafeHandles that free each handle exactly once, IDisposable
// Engine and Session, DsException carrying the ds_status, streaming by callback or IEnumerable.
// Targets netstandard2.0 (Mono and .NET 6/8 both consume it).
//
// Thread rules (ds_c.h): an Engine may be shared by any threads; a Session is used by one thread
// at a time (its methods lock); Cancel works from any thread. A Session keeps its Engine alive.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace Ds
{
    public class DsException : Exception
    {
        public int Status { get; }
        public DsException(int status, string message) : base(StatusName(status) + ": " + message) { Status = status; }
        static string StatusName(int status) => Marshal.PtrToStringAnsi(Native.ds_status_name(status));
    }

    public static class Status
    {
        public const int Ok = 0, InvalidArgument = 1, NotFound = 2, Format = 3, Unsupported = 4, OutOfMemory = 5,
                         ContextFull = 6, Cancelled = 8, InvalidState = 9, BufferTooSmall = 11;
    }

    public enum StopReason { Eos = 0, MaxTokens = 1, StopToken = 2, StopString = 3, Callback = 4, Cancelled = 5, ContextFull = 6 }

    public enum Speculative { None = 0, Draft = 1, Mtp = 2, Ngram = 3 }
    /// <summary>ds_weight_format: fewer bytes per weight read per token, for some accuracy.
    /// Int8 and Int4 are llama.cpp's Q8_0 / Q4_0 blocks (8.5 / 4.5 bits per weight), CPU only.</summary>
    public enum WeightFormat { F32 = 0, Bf16 = 1, Int8 = 2, Int4 = 3 }
    /// <summary>ds_backend: where the model runs.</summary>
    public enum Backend { Auto = 0, Cpu = 1, Cuda = 2 }

    internal static class Native
    {
        const string Lib = "ds";
        public const uint ApiVersion = 1;

        [StructLayout(LayoutKind.Sequential)]
        public struct EngineOptions
        {
            public uint struct_size; public int backend; public int n_threads; public int compute_dtype;
            public IntPtr progress; public IntPtr progress_user_data; public int weight_format; public int device;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct SessionOptions
        {
            public uint struct_size; public uint n_ctx; public float temperature; public int top_k; public float top_p;
            public float min_p; public ulong seed; public int logits_all; public int speculative_method;
            public int draft_tokens; public int draft_adaptive; public IntPtr draft_engine; public int ngram_min; public int ngram_max;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct ChatMessage { public IntPtr role; public IntPtr content; }

        [StructLayout(LayoutKind.Sequential)]
        public struct GenerateParams
        {
            public uint struct_size; public IntPtr prompt_ids; public UIntPtr n_prompt_ids; public IntPtr prompt_text;
            public UIntPtr prompt_text_len; public int add_special; public uint max_tokens; public IntPtr stop_ids;
            public UIntPtr n_stop_ids; public IntPtr stop_strings; public UIntPtr n_stop_strings; public int show_special;
            public int override_sampling; public float temperature; public int top_k; public float top_p; public float min_p;
            public ulong seed;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct GenerateResult
        {
            public uint struct_size; public int stop_reason; public uint n_prompt_tokens; public uint n_generated_tokens;
            public double prefill_seconds; public double decode_seconds; public double prefill_tokens_per_second;
            public double decode_tokens_per_second;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct SessionStats
        {
            public uint struct_size; public ulong target_passes; public ulong drafted_tokens; public ulong accepted_tokens;
            public double mean_accepted_length; public double draft_seconds; public double verify_seconds;
        }

        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int PieceCallback(IntPtr user, IntPtr piece, UIntPtr len, int token, uint flags);

        [DllImport(Lib)] public static extern uint ds_version();
        [DllImport(Lib)] public static extern IntPtr ds_last_error();
        [DllImport(Lib)] public static extern IntPtr ds_status_name(int status);
        [DllImport(Lib)] public static extern void ds_engine_options_init(ref EngineOptions o);
        [DllImport(Lib)] public static extern int ds_engine_open(byte[] dir, ref EngineOptions o, out IntPtr engine);
        [DllImport(Lib)] public static extern void ds_engine_close(IntPtr engine);
        [DllImport(Lib)] public static extern void ds_session_options_init(ref SessionOptions o);
        [DllImport(Lib)] public static extern int ds_session_create(EngineHandle engine, ref SessionOptions o, out IntPtr session);
        [DllImport(Lib)] public static extern void ds_session_close(IntPtr session);
        [DllImport(Lib)] public static extern int ds_session_append(SessionHandle s, int[] ids, UIntPtr n);
        [DllImport(Lib)] public static extern int ds_session_next_token(SessionHandle s, out int token);
        [DllImport(Lib)] public static extern int ds_session_logits(SessionHandle s, out IntPtr logits, out UIntPtr n_vocab);
        [DllImport(Lib)] public static extern int ds_session_truncate(SessionHandle s, UIntPtr n);
        [DllImport(Lib)] public static extern UIntPtr ds_session_n_tokens(SessionHandle s);
        [DllImport(Lib)] public static extern void ds_session_cancel(SessionHandle s);
        [DllImport(Lib)] public static extern int ds_session_stats_get(SessionHandle s, ref SessionStats stats);
        [DllImport(Lib)] public static extern int ds_tokenize(EngineHandle e, byte[] text, UIntPtr len, int add_special, int[] ids, UIntPtr cap, out UIntPtr n);
        [DllImport(Lib)] public static extern int ds_detokenize(EngineHandle e, int[] ids, UIntPtr n, byte[] buf, UIntPtr cap, out UIntPtr len);
        [DllImport(Lib)] public static extern int ds_chat_apply(EngineHandle e, ChatMessage[] m, UIntPtr n, int gen, byte[] buf, UIntPtr cap, out UIntPtr len);
        [DllImport(Lib)] public static extern void ds_generate_params_init(ref GenerateParams p);
        [DllImport(Lib)] public static extern int ds_session_generate(SessionHandle s, ref GenerateParams p, PieceCallback cb, IntPtr user, ref GenerateResult r);

        public static void Check(int status)
        {
            if (status != Status.Ok) throw new DsException(status, Marshal.PtrToStringAnsi(ds_last_error()) ?? "");
        }

        public static byte[] Utf8Z(string s) { var b = Encoding.UTF8.GetBytes(s); Array.Resize(ref b, b.Length + 1); return b; }
    }

    /// <summary>Owns a ds_engine*: released exactly once, when the last user lets go.</summary>
    public sealed class EngineHandle : SafeHandle
    {
        public EngineHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid => handle == IntPtr.Zero;
        protected override bool ReleaseHandle() { Native.ds_engine_close(handle); return true; }
        internal void Set(IntPtr p) => SetHandle(p);
    }

    /// <summary>Owns a ds_session*.</summary>
    public sealed class SessionHandle : SafeHandle
    {
        public SessionHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid => handle == IntPtr.Zero;
        protected override bool ReleaseHandle() { Native.ds_session_close(handle); return true; }
        internal void Set(IntPtr p) => SetHandle(p);
    }

    public struct ChatMessage
    {
        public string Role, Content;
        public ChatMessage(string role, string content) { Role = role; Content = content; }
    }

    public class SessionOptions
    {
        public uint NCtx = 0; public float Temperature = 0; public int TopK = 0; public float TopP = 1; public float MinP = 0;
        public ulong Seed = 0; public Speculative Speculative = Speculative.None; public int DraftTokens = 4; public Engine Draft;
    }

    public class GenerateParams
    {
        public int[] PromptIds; public string PromptText; public bool AddSpecial; public uint MaxTokens;
        public int[] StopIds; public string[] StopStrings; public bool ShowSpecial;
    }

    public struct Piece { public string Text; public int Token; public bool Reasoning; }

    public struct SessionStats { public ulong TargetPasses, DraftedTokens, AcceptedTokens; public double MeanAcceptedLength; }

    public struct GenerateResult
    {
        public StopReason StopReason; public int PromptTokens, GeneratedTokens;
        public double PrefillTokensPerSecond, DecodeTokensPerSecond;
    }

    public sealed class Engine : IDisposable
    {
        internal readonly EngineHandle Handle = new EngineHandle();

        /// <param name="weights">how weight matrices are stored (F32: exact)</param>
        /// <param name="backend">where the model runs</param>
        /// <param name="device">the CUDA device (ordinal) for Backend.Cuda and Backend.Auto</param>
        public Engine(string modelDir, int threads = 0, WeightFormat weights = WeightFormat.F32, Backend backend = Backend.Cpu,
                      int device = 0)
        {
            if (Native.ds_version() != Native.ApiVersion)
                throw new DsException(Status.Unsupported, $"libds has ABI version {Native.ds_version()}, this binding needs {Native.ApiVersion}");
            var o = new Native.EngineOptions();
            Native.ds_engine_options_init(ref o);
            o.n_threads = threads;
            o.weight_format = (int)weights;
            o.backend = (int)backend;
            o.device = device;
            Native.Check(Native.ds_engine_open(Native.Utf8Z(modelDir), ref o, out IntPtr p));
            Handle.Set(p);
        }

        EngineHandle Live => Handle.IsClosed ? throw new ObjectDisposedException(nameof(Engine)) : Handle;

        public int[] Tokenize(string text, bool addSpecial)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            int s = Native.ds_tokenize(Live, bytes, (UIntPtr)bytes.Length, addSpecial ? 1 : 0, null, UIntPtr.Zero, out UIntPtr n);
            if (s != Status.BufferTooSmall) { Native.Check(s); return new int[0]; }
            var ids = new int[(int)n];
            Native.Check(Native.ds_tokenize(Live, bytes, (UIntPtr)bytes.Length, addSpecial ? 1 : 0, ids, n, out n));
            return ids;
        }

        public string Detokenize(int[] ids)
        {
            int s = Native.ds_detokenize(Live, ids, (UIntPtr)ids.Length, null, UIntPtr.Zero, out UIntPtr n);
            if (s != Status.BufferTooSmall) { Native.Check(s); return ""; }
            var buf = new byte[(int)n];
            Native.Check(Native.ds_detokenize(Live, ids, (UIntPtr)ids.Length, buf, n, out n));
            return Encoding.UTF8.GetString(buf, 0, (int)n);
        }

        public string ChatApply(IList<ChatMessage> messages, bool addGenerationPrompt)
        {
            var native = new Native.ChatMessage[messages.Count];
            var pinned = new List<GCHandle>();
            try
            {
                for (int i = 0; i < messages.Count; i++)
                {
                    var role = GCHandle.Alloc(Native.Utf8Z(messages[i].Role), GCHandleType.Pinned);
                    var content = GCHandle.Alloc(Native.Utf8Z(messages[i].Content), GCHandleType.Pinned);
                    pinned.Add(role); pinned.Add(content);
                    native[i] = new Native.ChatMessage { role = role.AddrOfPinnedObject(), content = content.AddrOfPinnedObject() };
                }
                int gen = addGenerationPrompt ? 1 : 0;
                int s = Native.ds_chat_apply(Live, native, (UIntPtr)native.Length, gen, null, UIntPtr.Zero, out UIntPtr n);
                if (s != Status.BufferTooSmall) { Native.Check(s); return ""; }
                var buf = new byte[(int)n];
                Native.Check(Native.ds_chat_apply(Live, native, (UIntPtr)native.Length, gen, buf, n, out n));
                return Encoding.UTF8.GetString(buf, 0, (int)n);
            }
            finally { foreach (var h in pinned) h.Free(); }
        }

        public Session CreateSession(SessionOptions options = null) => new Session(this, options ?? new SessionOptions());

        public void Dispose() => Handle.Dispose();
    }

    public sealed class Session : IDisposable
    {
        readonly SessionHandle handle = new SessionHandle();
#pragma warning disable 0414  // never read: holding it keeps the engine (and its model) alive
        readonly Engine engine;
#pragma warning restore 0414
        readonly Engine draft;
        readonly object gate = new object();

        internal Session(Engine engine, SessionOptions options)
        {
            this.engine = engine;
            draft = options.Draft;
            var o = new Native.SessionOptions();
            Native.ds_session_options_init(ref o);
            o.n_ctx = options.NCtx; o.temperature = options.Temperature; o.top_k = options.TopK; o.top_p = options.TopP;
            o.min_p = options.MinP; o.seed = options.Seed; o.speculative_method = (int)options.Speculative;
            o.draft_tokens = options.DraftTokens;
            if (draft != null) o.draft_engine = draft.Handle.DangerousGetHandle();
            Native.Check(Native.ds_session_create(engine.Handle, ref o, out IntPtr p));
            handle.Set(p);
        }

        SessionHandle Live => handle.IsClosed ? throw new ObjectDisposedException(nameof(Session)) : handle;

        public void Append(int[] ids) { lock (gate) Native.Check(Native.ds_session_append(Live, ids, (UIntPtr)ids.Length)); }
        public int NextToken() { lock (gate) { Native.Check(Native.ds_session_next_token(Live, out int t)); return t; } }
        public void Truncate(int n) { lock (gate) Native.Check(Native.ds_session_truncate(Live, (UIntPtr)n)); }
        public int NTokens { get { lock (gate) return (int)Native.ds_session_n_tokens(Live); } }

        public float[] Logits()
        {
            lock (gate)
            {
                Native.Check(Native.ds_session_logits(Live, out IntPtr p, out UIntPtr n));
                var logits = new float[(int)n];
                Marshal.Copy(p, logits, 0, logits.Length);
                return logits;
            }
        }

        /// <summary>Stops a running Generate, from any thread.</summary>
        public void Cancel() { if (!handle.IsClosed) Native.ds_session_cancel(handle); }

        public SessionStats Stats()
        {
            var s = new Native.SessionStats { struct_size = (uint)Marshal.SizeOf<Native.SessionStats>() };
            lock (gate) Native.Check(Native.ds_session_stats_get(Live, ref s));
            return new SessionStats { TargetPasses = s.target_passes, DraftedTokens = s.drafted_tokens,
                                      AcceptedTokens = s.accepted_tokens, MeanAcceptedLength = s.mean_accepted_length };
        }

        /// <summary>Generates; onPiece returns true to stop. An exception thrown by onPiece stops
        /// generation and is rethrown here (it never crosses the C code).</summary>
        public GenerateResult Generate(GenerateParams p, Func<Piece, bool> onPiece)
        {
            lock (gate)
            {
                var live = Live;
                var handles = new List<GCHandle>();
                Exception thrown = null;
                Native.PieceCallback callback = (user, piece, len, token, flags) =>
                {
                    try
                    {
                        var bytes = new byte[(int)len];
                        if (bytes.Length > 0) Marshal.Copy(piece, bytes, 0, bytes.Length);
                        return onPiece(new Piece { Text = Encoding.UTF8.GetString(bytes), Token = token, Reasoning = (flags & 1) != 0 }) ? 1 : 0;
                    }
                    catch (Exception e) { thrown = e; return 1; }
                };
                try
                {
                    Func<object, IntPtr> Pin = o => { var h = GCHandle.Alloc(o, GCHandleType.Pinned); handles.Add(h); return h.AddrOfPinnedObject(); };
                    var n = new Native.GenerateParams();
                    Native.ds_generate_params_init(ref n);
                    if (p.PromptIds != null && p.PromptIds.Length > 0) { n.prompt_ids = Pin(p.PromptIds); n.n_prompt_ids = (UIntPtr)p.PromptIds.Length; }
                    if (!string.IsNullOrEmpty(p.PromptText))
                    {
                        var text = Encoding.UTF8.GetBytes(p.PromptText);
                        n.prompt_text = Pin(text); n.prompt_text_len = (UIntPtr)text.Length;
                    }
                    n.add_special = p.AddSpecial ? 1 : 0;
                    n.max_tokens = p.MaxTokens;
                    if (p.StopIds != null && p.StopIds.Length > 0) { n.stop_ids = Pin(p.StopIds); n.n_stop_ids = (UIntPtr)p.StopIds.Length; }
                    if (p.StopStrings != null && p.StopStrings.Length > 0)
                    {
                        var ptrs = new IntPtr[p.StopStrings.Length];
                        for (int i = 0; i < ptrs.Length; i++) ptrs[i] = Pin(Native.Utf8Z(p.StopStrings[i]));
                        n.stop_strings = Pin(ptrs); n.n_stop_strings = (UIntPtr)ptrs.Length;
                    }
                    n.show_special = p.ShowSpecial ? 1 : 0;
                    var r = new Native.GenerateResult { struct_size = (uint)Marshal.SizeOf<Native.GenerateResult>() };
                    int status = Native.ds_session_generate(live, ref n, callback, IntPtr.Zero, ref r);
                    GC.KeepAlive(callback);  // the delegate must outlive the native call
                    if (thrown != null) throw new DsException(Status.Cancelled, "the piece callback threw: " + thrown.Message);
                    Native.Check(status);
                    return new GenerateResult
                    {
                        StopReason = (StopReason)r.stop_reason, PromptTokens = (int)r.n_prompt_tokens,
                        GeneratedTokens = (int)r.n_generated_tokens, PrefillTokensPerSecond = r.prefill_tokens_per_second,
                        DecodeTokensPerSecond = r.decode_tokens_per_second
                    };
                }
                finally { foreach (var h in handles) h.Free(); }
            }
        }

        /// <summary>The answer as an enumerable of pieces (generation runs on a worker thread;
        /// leaving the loop early cancels it).</summary>
        public IEnumerable<Piece> Stream(GenerateParams p)
        {
            var queue = new BlockingCollection<Piece>(64);
            Exception failure = null;
            var worker = new Thread(() =>
            {
                try { Generate(p, piece => { queue.Add(piece); return false; }); }
                catch (Exception e) { failure = e; }
                finally { queue.CompleteAdding(); }
            });
            worker.Start();
            try
            {
                foreach (var piece in queue.GetConsumingEnumerable()) yield return piece;
            }
            finally
            {
                Cancel();
                while (!queue.IsCompleted) queue.TryTake(out _, 10);
                worker.Join();
            }
            if (failure != null) throw failure;
        }

        public void Dispose() { lock (gate) handle.Dispose(); }
    }
}
