//! Chat Completions ⇄ Responses.
