// The C# binding against the golden fixtures through the real libds. A small runner (no test
// framework needed): prints "N passed, N failed" and exits non-zero on a failure.
// Fixtures: $DS_FIXTURES_DIR, or ../shared/fixtures beside the checkout.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using Ds;

static class Tests
{
    static string Fixture(string name)
    {
        var dir = Environment.GetEnvironmentVariable("DS_FIXTURES_DIR");
        if (string.IsNullOrEmpty(dir)) dir = Path.Combine(AppDomain.CurrentDomain.BaseDirectory, "..", "..", "..", "..", "shared", "fixtures");
        return Path.Combine(dir, name);
    }

    // An I64 tensor of reference.safetensors (its header entry located by plain search).
    static int[] ReferenceIds(string fixture, string tensor)
    {
        var bytes = File.ReadAllBytes(Path.Combine(Fixture(fixture), "reference.safetensors"));
        int headerLen = (int)BitConverter.ToUInt64(bytes, 0);
        var header = Encoding.UTF8.GetString(bytes, 8, headerLen);
        var entry = header.Substring(header.IndexOf("\"" + tensor + "\""));
        var offsets = entry.Substring(entry.IndexOf("\"data_offsets\":[") + 16);
        var numbers = offsets.Substring(0, offsets.IndexOf(']')).Split(',').Select(s => int.Parse(s.Trim())).ToArray();
        var ids = new int[(numbers[1] - numbers[0]) / 8];
        for (int i = 0; i < ids.Length; i++) ids[i] = (int)BitConverter.ToInt64(bytes, 8 + headerLen + numbers[0] + 8 * i);
        return ids;
    }

    static void Assert(bool condition, string what) { if (!condition) throw new Exception("assertion failed: " + what); }

    static void GreedyMatchesTransformers()
    {
        foreach (var name in new[] { "deepseek_v3_tiny", "qwen2_tiny", "llama_tiny" })
        {
            using (var engine = new Engine(Fixture(name), threads: 1))
            using (var session = engine.CreateSession())
            {
                session.Append(ReferenceIds(name, "input_ids"));
                var want = ReferenceIds(name, "greedy_tokens");
                var got = want.Select(_ => session.NextToken()).ToArray();
                Assert(got.SequenceEqual(want), name + ": " + string.Join(",", got));
            }
        }
    }

    static void TokenizeAndGenerate()
    {
        const string name = "deepseek_v3_vocab_bf16";
        using (var engine = new Engine(Fixture(name), threads: 1))
        {
            Assert(engine.Tokenize("The capital of France is", true).SequenceEqual(ReferenceIds(name, "input_ids")), "tokenize");
            var want = ReferenceIds(name, "greedy_tokens");
            foreach (var options in new[] { new SessionOptions(), new SessionOptions { Speculative = Speculative.Ngram, DraftTokens = 3 },
                                            new SessionOptions { Speculative = Speculative.Draft, Draft = engine } })
            {
                using (var session = engine.CreateSession(options))
                {
                    var tokens = new List<int>();
                    var text = new StringBuilder();
                    var r = session.Generate(new GenerateParams { PromptText = "The capital of France is", AddSpecial = true, MaxTokens = (uint)want.Length },
                        p => { if (tokens.Count == 0 || tokens[tokens.Count - 1] != p.Token) tokens.Add(p.Token); text.Append(p.Text); return false; });
                    Assert(r.StopReason == StopReason.MaxTokens, "stop reason " + r.StopReason);
                    Assert(tokens.SequenceEqual(want), options.Speculative + ": " + string.Join(",", tokens));
                    Assert(text.ToString() == engine.Detokenize(want), "streamed text");
                }
            }
        }
    }

    static void Bf16WeightsOption()
    {
        // The fixture's weights are bf16 already, so bf16 storage changes nothing: same tokens.
        const string name = "llama_tied_bf16";
        using (var engine = new Engine(Fixture(name), threads: 1, weights: WeightFormat.Bf16))
        using (var session = engine.CreateSession())
        {
            session.Append(ReferenceIds(name, "input_ids"));
            var want = ReferenceIds(name, "greedy_tokens");
            Assert(want.Select(_ => session.NextToken()).SequenceEqual(want), "bf16 tokens");
        }
    }

    static void TheDeviceReachesTheLibrary()
    {
        try
        {
            new Engine(Fixture("qwen2_tiny"), backend: Backend.Cuda, device: -1).Dispose();
            Assert(false, "device -1 must fail");
        }
        catch (DsException e)
        {
            Assert(e.Message.Contains("device must be >= 0"), e.Message);
        }
    }

    static void QuantizedWeightsReachTheLibrary()
    {
        // int4 on CUDA is refused by libds itself, naming why.
        try
        {
            new Engine(Fixture("qwen2_tiny"), weights: WeightFormat.Int4, backend: Backend.Cuda).Dispose();
            Assert(false, "int4 on CUDA must fail");
        }
        catch (DsException e)
        {
            Assert(e.Message.Contains("CPU backend only"), e.Message);
        }
        using (var engine = new Engine(Fixture("qwen2_tiny"), threads: 1, weights: WeightFormat.Int8))
        using (var session = engine.CreateSession())
        {
            session.Append(ReferenceIds("qwen2_tiny", "input_ids"));
            session.NextToken();
        }
    }

    static void StreamingStopsWhenAsked()
    {
        using (var engine = new Engine(Fixture("deepseek_v3_vocab_bf16"), threads: 1))
        using (var session = engine.CreateSession())
        {
            int seen = 0;
            var r = session.Generate(new GenerateParams { PromptText = "Hello", AddSpecial = true }, p => ++seen >= 3);
            Assert(r.StopReason == StopReason.Callback && r.GeneratedTokens == 3, "callback stop: " + r.GeneratedTokens);
            // The enumerable form, left early.
            int pieces = 0;
            foreach (var piece in session.Stream(new GenerateParams { MaxTokens = 50 })) if (++pieces == 2) break;
            Assert(pieces == 2, "stream");
            session.NextToken();  // still usable
        }
    }

    static void ThrowingCallbackIsAnError()
    {
        using (var engine = new Engine(Fixture("deepseek_v3_vocab_bf16"), threads: 1))
        using (var session = engine.CreateSession())
        {
            try
            {
                session.Generate(new GenerateParams { PromptText = "Hi", AddSpecial = true, MaxTokens = 5 }, p => throw new InvalidOperationException("boom"));
                Assert(false, "no exception");
            }
            catch (DsException e) { Assert(e.Message.Contains("boom"), e.Message); }
            session.NextToken();
        }
    }

    static void CancelFromAnotherThread()
    {
        using (var engine = new Engine(Fixture("deepseek_v3_vocab_bf16"), threads: 1))
        using (var session = engine.CreateSession(new SessionOptions { NCtx = 4096 }))
        {
            var started = new ManualResetEventSlim();
            var canceller = new Thread(() => { started.Wait(); session.Cancel(); });
            canceller.Start();
            var r = session.Generate(new GenerateParams { PromptText = "Hello", AddSpecial = true }, p => { started.Set(); Thread.Sleep(2); return false; });
            canceller.Join();
            Assert(r.StopReason == StopReason.Cancelled, "stop reason " + r.StopReason);
        }
    }

    static void ErrorsAndDisposedHandles()
    {
        try { new Engine("/nonexistent/model"); Assert(false, "opened"); }
        catch (DsException e) { Assert(e.Status == Status.NotFound && e.Message.Contains("/nonexistent/model"), e.Message); }
        var engine = new Engine(Fixture("qwen2_tiny"), threads: 1);
        var session = engine.CreateSession();
        engine.Dispose();  // the session keeps the model
        session.Append(new[] { 1, 2, 3 });
        session.NextToken();
        session.Dispose();
        session.Dispose();
        try { session.NextToken(); Assert(false, "used after dispose"); } catch (ObjectDisposedException) { }
        try { engine.Tokenize("x", false); Assert(false, "used after dispose"); } catch (ObjectDisposedException) { }
    }

    static void ChatTemplate()
    {
        using (var engine = new Engine(Fixture("deepseek_v3_vocab_bf16"), threads: 1))
        {
            var text = engine.ChatApply(new[] { new ChatMessage("user", "What is 2+2?") }, true);
            Assert(text == "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>", text);
        }
    }

    static int Main()
    {
        var tests = new Dictionary<string, Action> {
            { "GreedyMatchesTransformers", GreedyMatchesTransformers }, { "TokenizeAndGenerate", TokenizeAndGenerate },
            { "StreamingStopsWhenAsked", StreamingStopsWhenAsked }, { "ThrowingCallbackIsAnError", ThrowingCallbackIsAnError },
            { "CancelFromAnotherThread", CancelFromAnotherThread }, { "ErrorsAndDisposedHandles", ErrorsAndDisposedHandles },
            { "ChatTemplate", ChatTemplate }, { "Bf16WeightsOption", Bf16WeightsOption },
            { "QuantizedWeightsReachTheLibrary", QuantizedWeightsReachTheLibrary },
            { "TheDeviceReachesTheLibrary", TheDeviceReachesTheLibrary } };
        int passed = 0, failed = 0;
        foreach (var test in tests)
        {
            try { test.Value(); passed++; Console.WriteLine("PASS " + test.Key); }
            catch (Exception e) { failed++; Console.WriteLine("FAIL " + test.Key + ": " + e); }
        }
        Console.WriteLine($"{passed} passed, {failed} failed");
        return failed == 0 ? 0 : 1;
    }
}
