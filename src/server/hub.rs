//! Clients whose dialect is not their provider's wire, through the Responses hub (DESIGN §9):
//! client → Responses → wire for the request, and wire events → Responses events → client
//! for the answer.
//!
//! Chat and Anthropic clients over a Responses provider go through `super::translated`. This
//! module is the seam for the other direction — a Responses or Chat client whose model is
//! served by a provider of another wire (today: Anthropic Messages). The wire's request mapper
//! (Responses → Messages) and event decoder (`translate::hub::WireDecoder`) plug in at
//! [`forward_over_wire`]; until they exist, such a request is answered 400
//! `unsupported_on_provider` in the client's dialect and the upstream is not contacted.

use http::HeaderMap;
use http::Response;

use super::body::{ProxyBody, RequestLog};
use super::limits::Reservation;
use super::State;
use crate::pool::Target;
use crate::translate::Dialect;

/// Serves a `client`-dialect request (`body`, decoded JSON) whose model's provider (`target`)
/// speaks `wire`.
///
/// Where the hub goes: map `body` to a Responses request (`translate::map_request` for Chat,
/// as is for Responses, then the model table), map that to `wire`'s request, send it with an
/// `Outbound` for `target` (endpoint `ProviderKind::endpoint`), and read the answer through
/// `StreamPipeline::new(ctx).over_wire(decoder)` (streaming) or
/// `AggregatePipeline::new(ctx).over_wire(decoder)` (one JSON answer), as
/// `translated::respond` does for the Responses wire.
#[allow(clippy::too_many_arguments)]
pub async fn forward_over_wire(
    _state: &State,
    client: Dialect,
    wire: Dialect,
    _headers: &HeaderMap,
    _body: &[u8],
    _target: Target,
    reservation: Reservation,
    _log: &mut RequestLog,
) -> Response<ProxyBody> {
    drop(reservation);
    let what = match wire {
        Dialect::Anthropic => "requests in this dialect yet (it speaks Anthropic Messages)",
        Dialect::Chat => "requests in this dialect yet (it speaks Chat Completions)",
        Dialect::Responses => "this request",
    };
    let _ = client;
    super::handler::unsupported_on_provider(client, what)
}
