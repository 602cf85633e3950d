//! Filling the outbound event from what the proxy learns along the way: the request, the
//! route, the upstream connection.

use http::{Request, Version};
use hyper::body::Incoming;

use super::Shared;
use super::connect::ConnectionInfo;
use super::event::Recorder;
use super::forward::Downstream;
use super::resolve::Route;

/// `HTTP/1.1`, `HTTP/2`, as Envoy's `%PROTOCOL%` spells them.
pub(super) fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A recorder filled with what the request says.
pub(super) fn request_recorder(
    shared: &Shared,
    req: &Request<Incoming>,
    authority: &str,
    down: &Downstream,
) -> Recorder {
    let mut rec = Recorder::new(shared.sink.clone(), down.listener);
    rec.update(|e| {
        e.protocol = Some(protocol_name(req.version()));
        e.downstream_remote_address = Some(down.remote);
        e.downstream_local_address = Some(down.local);
        if !shared.request_details {
            return;
        }
        e.method = Some(req.method().to_string());
        e.path = Some(
            req.uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned()),
        );
        e.authority = Some(authority.to_owned());
        e.request_headers = crate::observe::record::logged_headers(req.headers());
    });
    rec
}

/// Records the route on the event.
pub(super) fn record_route(rec: &mut Recorder, route: &Route) {
    rec.update(|e| {
        e.upstream_cluster = Some(route.cluster());
        if let Route::Mesh(m) = route {
            e.destination_service = m.service.clone();
        }
    });
}

/// Records the upstream connection on the event.
pub(super) fn record_upstream(rec: &mut Recorder, info: &ConnectionInfo, workload: Option<&str>) {
    rec.update(|e| {
        e.upstream_host = info.peer;
        e.upstream_local_address = info.local;
        e.requested_server_name = info.sni.clone();
        e.upstream_mtls = info.mtls;
        e.upstream_peer_identity = info.peer_identity.clone();
        e.destination_workload = workload.map(str::to_owned);
    });
}
