//! The API router (axum handlers, JSON bodies, validation, admission, the read mirror) with a
//! stub VMM answering `204`: a sequence of requests (known routes or any path, any method, any
//! body) per input against a fresh controller. Every answer must be one of the statuses the API
//! documents, and every error body exactly `{"fault_message": "..."}`.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use squib_api::{ControllerSnapshot, RuntimeApiController, TimeoutTable, router};
use squib_core::{CapabilityProfile, LifecyclePhase};
use tower::ServiceExt;

const ROUTES: &[&str] = &[
    "/",
    "/version",
    "/vm",
    "/vm/config",
    "/machine-config",
    "/cpu-config",
    "/boot-source",
    "/drives/d0",
    "/drives/rootfs",
    "/pmem/p0",
    "/network-interfaces/n0",
    "/vsock",
    "/balloon",
    "/balloon/statistics",
    "/balloon/hinting/start",
    "/balloon/hinting/status",
    "/balloon/hinting/stop",
    "/logger",
    "/metrics",
    "/serial",
    "/entropy",
    "/mmds",
    "/mmds/config",
    "/hotplug/memory",
    "/actions",
    "/snapshot/create",
    "/snapshot/load",
];
const METHODS: &[&str] = &["GET", "PUT", "PATCH", "DELETE", "POST"];

#[derive(Arbitrary, Debug)]
struct Req {
    method: u8,
    route: u8,
    /// Replaces the route when set (any path, any bytes).
    raw_path: Option<String>,
    body: Vec<u8>,
    json_content_type: bool,
}

#[derive(Arbitrary, Debug)]
struct Case {
    booted: bool,
    reqs: Vec<Req>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    runtime().block_on(async {
        let snap = ControllerSnapshot::new("anonymous-instance", "1.17.0-dev", "1.17.0-dev (fuzz)")
            .with_profile(CapabilityProfile::x86_64_kvm());
        let (c, mut rx) = RuntimeApiController::new(snap, TimeoutTable::from_spec(), 64);
        let c = Arc::new(c);
        if case.booted {
            c.set_phase(LifecyclePhase::Running);
        }
        let vmm = tokio::spawn(async move {
            while let Some((_action, reply)) = rx.recv().await {
                let _ = reply.send(squib_api::ApiResponse::NoContent);
            }
        });
        let app = router(Arc::clone(&c));
        for r in case.reqs.iter().take(16) {
            let path = match &r.raw_path {
                Some(p) => p.clone(),
                None => ROUTES[usize::from(r.route) % ROUTES.len()].to_owned(),
            };
            let mut b = http::Request::builder()
                .method(METHODS[usize::from(r.method) % METHODS.len()])
                .uri(path);
            if r.json_content_type {
                b = b.header("content-type", "application/json");
            }
            let Ok(req) = b.body(axum::body::Body::from(r.body.clone())) else {
                continue;
            };
            let Ok(resp) = app.clone().oneshot(req).await;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            match status {
                200 => {}
                204 => assert!(body.is_empty()),
                400 | 404 | 405 | 413 | 500 | 503 | 504 => {
                    if !body.is_empty() {
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).expect("error body is JSON");
                        let o = v.as_object().expect("error body is an object");
                        assert!(o.len() == 1 && o["fault_message"].is_string(), "{v}");
                    }
                }
                other => panic!("unexpected status {other}"),
            }
        }
        drop(app);
        drop(c);
        vmm.abort();
    });
});
