// mono Example.exe MODEL_DIR "Why is the sky blue?"
using System;
using Ds;

static class Example
{
    static int Main(string[] args)
    {
        using (var engine = new Engine(args[0]))
        using (var session = engine.CreateSession())
        {
            var prompt = engine.ChatApply(new[] { new ChatMessage("user", args.Length > 1 ? args[1] : "Hello") }, true);
            foreach (var piece in session.Stream(new GenerateParams { PromptText = prompt, MaxTokens = 64 }))
                Console.Write(piece.Text);
            Console.WriteLine();
        }
        return 0;
    }
}
