//! gRPC and HTTP on one port: a request whose content type is `application/grpc` (or one of
//! its `+proto` forms) goes to the Flight service, everything else to the HTTP API. Both
//! HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC clients speak it) are served.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use querier::flight::{FlightServiceServer, QueryFlightService};
use tonic::codegen::Service;

/// The router of the whole port.
pub(crate) fn one_port(http: Router, flight: FlightServiceServer<QueryFlightService>) -> Router {
    Router::new().fallback_service(GrpcOrHttp { http, flight })
}

#[derive(Clone)]
struct GrpcOrHttp {
    http: Router,
    flight: FlightServiceServer<QueryFlightService>,
}

impl Service<Request> for GrpcOrHttp {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready: a router and a tonic server hold no connection state.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if is_grpc(&request) {
            let mut flight = self.flight.clone();
            Box::pin(async move {
                let response = flight.call(request).await?;
                Ok(response.map(Body::new))
            })
        } else {
            let mut http = self.http.clone();
            Box::pin(async move { http.call(request).await })
        }
    }
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc").is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('+') || rest.starts_with(';')
            })
        })
}
