// go run ./example MODEL_DIR "Why is the sky blue?"
package main

import (
	"context"
	"fmt"
	"os"

	"ds.invalid/ds/ds"
)

func main() {
	engine, err := ds.Open(os.Args[1], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer engine.Close()
	text, _ := engine.ChatApply([]ds.ChatMessage{{Role: "user", Content: os.Args[2]}}, true)
	session, _ := engine.NewSession(nil)
	defer session.Close()
	res, err := session.GenerateTo(context.Background(), ds.GenerateParams{PromptText: text, MaxTokens: 64}, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("\n[%d tokens at %.1f tok/s]\n", res.GeneratedTokens, res.DecodeTokensPerSecond)
}
