//! The custom-handler envelope: what the Functions host POSTs and what it expects back.
//!
//! The host sends `{"Data": {<binding>: …}, "Metadata": {…}}` to `/<FunctionName>` and
//! takes `200` with `{"Outputs": {…}, "Logs": […], "ReturnValue": …}`; HTTP triggers
//! arrive in the same envelope (`enableForwardingHttpRequest` is false) and answer through
//! the `res` output binding. This file owns that contract, so the wire shape lives in one
//! place: checking the envelope (400 with the reason, starting nothing, when it is not the
//! host's), telling a timer binding from an HTTP one, and answering each. What a run *is*
//! (starting one, its state, the hand-off) lives in [`super::runs`].

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::runs::{self, RunPhase};
use super::{json_response, App};
use crate::support::ids;

/// Name of the HTTP-trigger function [`super::scaffold::scaffold`] writes.
pub const HTTP_FUNCTION: &str = "runs";

pub(super) fn bad_request(reason: impl Into<String>) -> Response<Full<Bytes>> {
    let reason = reason.into();
    tracing::warn!("rejected invocation: {reason}");
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"Outputs": {}, "Logs": [format!("rejected: {reason}")], "ReturnValue": null, "error": reason}),
    )
}

/// Which binding a host invocation carries.
enum Trigger<'a> {
    Timer(&'a Value),
    Http(&'a Value),
}

fn classify(data: &serde_json::Map<String, Value>) -> Option<Trigger<'_>> {
    for v in data.values() {
        if let Some(o) = v.as_object() {
            if o.contains_key("Method") || o.contains_key("Url") {
                return Some(Trigger::Http(v));
            }
            if o.contains_key("IsPastDue")
                || o.contains_key("Schedule")
                || o.contains_key("ScheduleStatus")
            {
                return Some(Trigger::Timer(v));
            }
        }
    }
    None
}

pub(super) async fn invoke(app: Arc<App>, function: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the body is not JSON: {e}")),
    };
    let Some(env) = v.as_object() else {
        return bad_request("the body is not a JSON object with Data and Metadata");
    };
    let Some(data) = env.get("Data").and_then(Value::as_object) else {
        return bad_request("missing \"Data\" object (expected the Functions host's {\"Data\":{…},\"Metadata\":{…}})");
    };
    if let Some(m) = env.get("Metadata") {
        if !m.is_object() {
            return bad_request("\"Metadata\" must be an object");
        }
    }
    match classify(data) {
        Some(Trigger::Timer(t)) => timer(app, function, t).await,
        Some(Trigger::Http(r)) => http(app, function, r).await,
        None => bad_request(
            "\"Data\" holds neither a timer binding (IsPastDue/Schedule) nor an HTTP request binding (Method/Url)",
        ),
    }
}

fn host_answer(
    status: StatusCode,
    outputs: Value,
    logs: Vec<String>,
    ret: Value,
) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"Outputs": outputs, "Logs": logs, "ReturnValue": ret}),
    )
}

async fn timer(app: Arc<App>, function: &str, t: &Value) -> Response<Full<Bytes>> {
    let Some(p) = app.pipelines.get(function).cloned() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"Outputs": {}, "Logs": [format!("no pipeline is mapped to function {function:?}")], "ReturnValue": null,
                    "error": format!("no pipeline named {function:?} (function names are pipeline names)")}),
        );
    };
    let mut logs = Vec::new();
    if t.get("IsPastDue").and_then(Value::as_bool) == Some(true) {
        let msg = format!(
            "timer for {} is past due (the host was down or busy); running now",
            p.name
        );
        tracing::warn!("{msg}");
        logs.push(msg);
    }
    let run_id = ids::run_id(Utc::now());
    if app.handoff.contains_key(&p.name) {
        let past_due = t.get("IsPastDue").and_then(Value::as_bool) == Some(true);
        return match runs::hand_off(&app, &p, run_id, "timer", past_due, &mut logs).await {
            Ok(v) => host_answer(StatusCode::ACCEPTED, json!({}), logs, v),
            Err(v) => host_answer(StatusCode::INTERNAL_SERVER_ERROR, json!({}), logs, v),
        };
    }
    let rx = match runs::start(&app, &p, run_id.clone(), "timer") {
        Ok(rx) => rx,
        Err(running) => {
            let msg = format!(
                "a run of {} is still going ({running}); this tick is skipped",
                p.name
            );
            tracing::warn!("{msg}");
            logs.push(msg);
            return host_answer(
                StatusCode::OK,
                json!({}),
                logs,
                json!({"skipped": true, "running": running}),
            );
        }
    };
    logs.push(format!("run {run_id} of {} started (timer)", p.name));
    let st = match rx.await {
        Ok(st) => st,
        Err(_) => {
            return host_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({}),
                logs,
                json!({"run_id": run_id, "state": "failed", "error": "run task ended unexpectedly"}),
            );
        }
    };
    logs.push(format!(
        "run {} of {} ended: {}{}",
        st.run_id,
        st.pipeline,
        st.state,
        st.error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    ));
    let code = match st.state {
        RunPhase::Ok | RunPhase::Partial | RunPhase::Locked => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    host_answer(
        code,
        json!({}),
        logs,
        serde_json::to_value(&st).unwrap_or(Value::Null),
    )
}

fn http_out(status: u16, body: &Value) -> Value {
    json!({"res": {"statusCode": status, "body": body.to_string(), "headers": {"Content-Type": "application/json"}}})
}

fn query<'a>(req: &'a Value, key: &str) -> Option<&'a str> {
    req.get("Query")
        .and_then(|q| q.get(key))
        .and_then(|v| match v {
            Value::String(s) => Some(s.as_str()),
            Value::Array(a) => a.first().and_then(Value::as_str),
            _ => None,
        })
}

async fn http(app: Arc<App>, function: &str, req: &Value) -> Response<Full<Bytes>> {
    let Some(method) = req.get("Method").and_then(Value::as_str) else {
        return bad_request("the HTTP request binding has no \"Method\"");
    };
    // The pipeline: route parameter, query, JSON body, or the function name itself.
    let body_json: Option<Value> = match req.get("Body") {
        Some(Value::String(s)) if !s.trim().is_empty() => serde_json::from_str(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    let pipeline = req
        .get("Params")
        .and_then(|p| p.get("pipeline"))
        .and_then(Value::as_str)
        .or_else(|| query(req, "pipeline"))
        .or_else(|| {
            body_json
                .as_ref()
                .and_then(|b| b.get("pipeline"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .or_else(|| (function != HTTP_FUNCTION).then(|| function.to_string()));
    let mut logs = Vec::new();
    match method.to_ascii_uppercase().as_str() {
        "POST" => {
            let Some(name) = pipeline else {
                let b = json!({"error": "say which pipeline: POST /api/runs/<pipeline>"});
                return host_answer(StatusCode::OK, http_out(400, &b), logs, Value::Null);
            };
            let Some(p) = app.pipelines.get(&name).cloned() else {
                let b = json!({"error": format!("no pipeline named {name:?}"), "pipelines": app.pipelines.keys().collect::<Vec<_>>()});
                return host_answer(StatusCode::OK, http_out(404, &b), logs, Value::Null);
            };
            let given = query(req, "run_id").map(str::to_string).or_else(|| {
                body_json
                    .as_ref()
                    .and_then(|b| b.get("run_id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let run_id = match given {
                Some(id) if !ids::is_safe_segment(&id) => {
                    let b = json!({"error": format!("run_id {id:?} is not a safe id (letters, digits, - _ .)")});
                    return host_answer(StatusCode::OK, http_out(400, &b), logs, Value::Null);
                }
                Some(id) => id,
                None => ids::run_id(Utc::now()),
            };
            if app.handoff.contains_key(&p.name) {
                return match runs::hand_off(&app, &p, run_id, "http", false, &mut logs).await {
                    Ok(mut v) => {
                        v["status_query"] = json!(format!(
                            "/api/{HTTP_FUNCTION}?id={}",
                            v["run_id"].as_str().unwrap_or_default()
                        ));
                        host_answer(StatusCode::OK, http_out(202, &v), logs, Value::Null)
                    }
                    Err(v) => host_answer(StatusCode::OK, http_out(503, &v), logs, Value::Null),
                };
            }
            match runs::start(&app, &p, run_id.clone(), "http") {
                Ok(_) => {
                    logs.push(format!("run {run_id} of {name} started (HTTP)"));
                    let b = json!({"run_id": run_id, "pipeline": name, "state": "running",
                                   "status_query": format!("/api/{HTTP_FUNCTION}?id={run_id}")});
                    host_answer(StatusCode::OK, http_out(202, &b), logs, Value::Null)
                }
                Err(running) => {
                    let b = json!({"error": format!("a run of {name} is already going"), "run_id": running});
                    host_answer(StatusCode::OK, http_out(409, &b), logs, Value::Null)
                }
            }
        }
        "GET" => {
            if let Some(id) = query(req, "id") {
                return match runs::find(&app, id, pipeline.as_deref()).await {
                    Some(v) => host_answer(StatusCode::OK, http_out(200, &v), logs, Value::Null),
                    None => host_answer(
                        StatusCode::OK,
                        http_out(404, &json!({"error": format!("no run {id:?}")})),
                        logs,
                        Value::Null,
                    ),
                };
            }
            let b = runs::recent(&app, pipeline.as_deref());
            drop(logs);
            host_answer(StatusCode::OK, http_out(200, &b), Vec::new(), Value::Null)
        }
        other => {
            let b = json!({"error": format!("method {other} not allowed: POST starts a run, GET queries one")});
            host_answer(StatusCode::OK, http_out(405, &b), logs, Value::Null)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn bindings_are_told_apart_by_their_fields() {
        let timer = data(json!({"timer": {"IsPastDue": false}}));
        assert!(matches!(classify(&timer), Some(Trigger::Timer(_))));
        let http = data(json!({"req": {"Method": "GET", "Url": "http://x/api/runs"}}));
        assert!(matches!(classify(&http), Some(Trigger::Http(_))));
        let neither = data(json!({"x": {"Foo": 1}, "y": 2}));
        assert!(classify(&neither).is_none());
    }

    #[test]
    fn query_takes_a_string_or_the_first_of_a_list() {
        let req = json!({"Query": {"id": "r1", "pipeline": ["home", "other"], "n": 3}});
        assert_eq!(query(&req, "id"), Some("r1"));
        assert_eq!(query(&req, "pipeline"), Some("home"));
        assert_eq!(query(&req, "n"), None);
        assert_eq!(query(&req, "missing"), None);
    }
}
