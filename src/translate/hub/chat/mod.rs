//! The Chat Completions wire (`kind = "chat"` providers: llama.cpp, vLLM, Ollama, LM Studio,
//! DeepSeek, OpenRouter, Groq), as the hub and passthrough see it. The facts these pieces rely
//! on are in `docs/chat-wire.md`.
//!
//! * [`request`]: a Responses request → a Chat Completions request (the mapping table is
//!   there), with [`ChatWireOptions`] for what the server accepts and the forced `params`.
//! * [`decode`]: [`ChatWireDecoder`], Chat chunks → Responses events, for
//!   [`StreamPipeline::over_wire`](crate::translate::StreamPipeline::over_wire) and
//!   [`AggregatePipeline::over_wire`](crate::translate::AggregatePipeline::over_wire); and
//!   [`decode_body`] for a server that answers a stream request with one JSON body.
//! * [`passthrough`]: Chat clients → a chat provider: [`rewrite_request`] and the streaming
//!   [`ChatPassthrough`] stage (think tags, the extra usage chunk), and
//!   [`completion_as_stream`] for a server that answers a stream request with one body.

pub mod decode;
pub mod passthrough;
pub mod request;

pub use decode::{decode_body, ChatUsage, ChatWireDecoder};
pub use passthrough::{
    completion_as_stream, completion_with_think, rewrite_request, ChatPassthrough,
    PassthroughRequest,
};
pub use request::{map_request, ChatRequest, ChatWireOptions, MaxTokensField};
