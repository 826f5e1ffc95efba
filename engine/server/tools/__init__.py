"""Tool calling: tools into the chat template, the model's tool calls out of its text (by a parser
named as vLLM's --tool-call-parser), and tool_choice required / named held by a grammar."""
