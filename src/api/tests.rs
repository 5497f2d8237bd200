//! Tests of the router and the OpenAPI document.

use super::middleware::sane_request_id;
use super::*;
use utoipa::OpenApi as _;

#[test]
fn docs_api_md_covers_every_route_of_the_openapi_document() {
    let doc = ApiDoc::openapi();
    let md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap_or_default();
    let mut missing = Vec::new();
    for (path, item) in doc.paths.paths.iter() {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
        ];
        for (m, present) in methods {
            if present && !md.contains(&format!("`{m} {path}`")) {
                missing.push(format!("{m} {path}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/API.md does not mention: {missing:?}");
}

#[test]
fn docs_openapi_json_is_the_generated_document() {
    let generated: serde_json::Value = serde_json::from_str(&openapi_json_string()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or_default();
    assert!(
        generated == committed,
        "docs/openapi.json is stale: run `cargo run --bin cairn -- openapi > docs/openapi.json`"
    );
}

/// docs/API.md's error table is [`crate::error::ERROR_CODES`]. With
/// `CAIRN_BLESS_DOCS=1` the test writes the generated table instead.
#[test]
fn docs_api_md_error_table_is_generated() {
    const BEGIN: &str = "<!-- BEGIN error codes: generated from ERROR_CODES in src/error.rs -->\n";
    const END: &str = "<!-- END error codes -->";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");
    let md = std::fs::read_to_string(path).unwrap_or_default();
    let (Some(b), Some(e)) = (md.find(BEGIN), md.find(END)) else {
        panic!("docs/API.md has no {BEGIN:?} ... {END:?} markers");
    };
    let committed = &md[b + BEGIN.len()..e];
    let generated = crate::error::error_codes_markdown();
    if committed != generated && std::env::var_os("CAIRN_BLESS_DOCS").is_some() {
        let updated = format!("{}{generated}{}", &md[..b + BEGIN.len()], &md[e..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "docs/API.md's error table is stale: run `CAIRN_BLESS_DOCS=1 cargo test --workspace --lib -- docs_api_md_error_table`\ngenerated:\n{generated}"
    );
}

/// Every operation of the OpenAPI document describes its error responses,
/// each with the error body, and no code outside the table.
#[test]
fn every_operation_describes_its_errors() {
    use serde_json::Value;
    let doc: Value = serde_json::from_str(&openapi_json_string()).unwrap();
    let codes: Vec<&str> = crate::error::ERROR_CODES.iter().map(|c| c.code).collect();
    let mut bare = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let errors: Vec<(&String, &Value)> = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(s, _)| s.starts_with('4') || s.starts_with('5'))
                .collect();
            if errors.is_empty() {
                bare.push(format!("{method} {path}"));
            }
            for (status, r) in errors {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}: {r}"
                );
                assert!(
                    codes
                        .iter()
                        .any(|c| r["description"].as_str().unwrap_or("").contains(&format!("`{c}`"))),
                    "{method} {path} {status} names no code: {r}"
                );
            }
        }
    }
    assert!(bare.is_empty(), "operations without error responses: {bare:?}");
    let enum_codes = &doc["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"];
    assert_eq!(enum_codes.as_array().map(Vec::len), Some(codes.len()), "{enum_codes}");
    let mut unique = codes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), codes.len(), "a code appears twice in ERROR_CODES");
}

/// Every object the API actually serialises has the keys its schema
/// documents (all required ones, none undocumented), recursively through
/// `$ref`s; so a renamed or added domain field cannot leave the schema behind.
#[test]
fn domain_schemas_match_what_the_api_serialises() {
    use serde_json::Value;
    let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    fn check(v: &Value, schema: &Value, schemas: &Value, at: &str, seen: &mut Vec<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(schemas[name].is_object(), "{at}: dangling $ref {r}");
            seen.push(name.to_string());
            return check(v, &schemas[name], schemas, at, seen);
        }
        if let Some(parts) = schema["allOf"].as_array() {
            // `#[serde(flatten)]`: the value has the keys of every part.
            let mut properties = serde_json::Map::new();
            let mut required = Vec::new();
            for part in parts {
                let part = match part["$ref"].as_str() {
                    Some(r) => {
                        let name = r.trim_start_matches("#/components/schemas/");
                        seen.push(name.to_string());
                        &schemas[name]
                    }
                    None => part,
                };
                properties.extend(part["properties"].as_object().cloned().unwrap_or_default());
                required.extend(part["required"].as_array().cloned().unwrap_or_default());
            }
            let merged = serde_json::json!({"properties": properties, "required": required});
            return check(v, &merged, schemas, at, seen);
        }
        if let Some(alts) = schema["oneOf"].as_array() {
            // An enum: the variant whose tag the value carries.
            let tag = match v {
                Value::Object(o) => o.keys().next().cloned(),
                Value::String(s) => Some(s.clone()),
                _ => None,
            };
            let alt = alts.iter().find(|a| {
                tag.as_ref().is_some_and(|t| {
                    a["properties"][t].is_object()
                        || a["enum"]
                            .as_array()
                            .is_some_and(|e| e.contains(&Value::String(t.clone())))
                }) || a["type"] == "null" && v.is_null()
            });
            if let Some(alt) = alt {
                check(v, alt, schemas, at, seen);
            } else if !alts.iter().any(|a| a["$ref"].is_string()) {
                panic!("{at}: {v} matches no variant of {schema}");
            }
            return;
        }
        match v {
            Value::Object(o) if schema["properties"].is_object() => {
                let props = schema["properties"].as_object().unwrap();
                for (k, x) in o {
                    let p = props
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}.{k} is not in the schema {schema}"));
                    check(x, p, schemas, &format!("{at}.{k}"), seen);
                }
                for req in schema["required"].as_array().into_iter().flatten() {
                    let req = req.as_str().unwrap_or_default();
                    assert!(o.contains_key(req), "{at}: required {req} missing from {v}");
                }
            }
            Value::Array(items) if schema["items"].is_object() => {
                for (i, x) in items.iter().enumerate() {
                    check(x, &schema["items"], schemas, &format!("{at}[{i}]"), seen);
                }
            }
            _ => {}
        }
    }
    let mut mission = cairn_state::Mission::default();
    let ctx = |index| cairn_state::ApplyCtx {
        index,
        term: 1,
        timestamp_ms: 1_000,
    };
    let commands = [
        cairn_state::Command::ReplacePlan {
            expected_version: None,
            name: "traverse".into(),
            frame_id: "map".into(),
            goals: vec![cairn_state::GoalSpec {
                kind: cairn_state::GoalKind::Waypoint {
                    pose: cairn_state::Pose::new(1.0, 2.0, 0.0, 0.0),
                },
                tolerance: cairn_state::Tolerance {
                    position_m: 0.5,
                    heading_rad: None,
                },
            }],
        },
        cairn_state::Command::CreateTask(cairn_state::TaskSpec {
            kind: "navigate".into(),
            required_capabilities: ["drive".to_string()].into(),
            resources: Default::default(),
            priority: 1,
            deadline_ms: None,
            retry: Default::default(),
            goal: None,
        }),
        cairn_state::Command::ReportSensorHealth {
            sensor: "imu".into(),
            health: cairn_state::SensorHealth::Failed,
        },
    ];
    let mut responses = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        let r = cairn_state::apply(&mut mission, cmd, &ctx(i as u64 + 1));
        responses.push(r.unwrap_or_else(|e| panic!("{cmd:?}: {e}")));
    }
    let mut seen = Vec::new();
    let body = |name: &str| serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
    for (i, r) in responses.iter().enumerate() {
        let v = serde_json::to_value(r).unwrap();
        check(&v, &body("Response"), schemas, &format!("response{i}"), &mut seen);
    }
    let mv = super::mission::MissionView {
        plan: mission.plan().clone(),
        effective: mission.effective(),
    };
    check(
        &serde_json::to_value(&mv).unwrap(),
        &body("MissionView"),
        schemas,
        "mission",
        &mut seen,
    );
    let tasks: Vec<_> = mission
        .tasks(&Default::default())
        .into_iter()
        .map(|t| super::tasks::TaskView::of(&mission, t))
        .collect();
    assert!(
        tasks.iter().all(|t| t.unplaceable.is_some()),
        "no node is up: every task says why"
    );
    check(
        &serde_json::to_value(&tasks).unwrap(),
        &serde_json::json!({"items": body("TaskView")}),
        schemas,
        "tasks",
        &mut seen,
    );
    let policies = serde_json::to_value(mission.policies()).unwrap();
    check(
        &policies,
        &serde_json::json!({"items": body("DegradationPolicy")}),
        schemas,
        "policies",
        &mut seen,
    );
    let status = cairn_raft::Status {
        id: 1,
        role: cairn_raft::Role::Leader,
        term: 2,
        leader: Some(1),
        last_log_index: Some(9),
        committed_index: Some(9),
        applied_index: Some(9),
        snapshot_index: None,
        purged_index: None,
        members: vec![cairn_raft::MemberStatus {
            id: 1,
            member: cairn_raft::Member {
                raft_addr: "127.0.0.1:7001".into(),
                api_addr: "127.0.0.1:8001".into(),
            },
            voter: true,
            matched_index: Some(9),
            lag: Some(0),
            last_ack_ms: Some(3),
        }],
        quorum: true,
        leader_contact_ms: Some(3),
        fault_tolerance: Some(0),
        membership_changing: false,
    };
    check(
        &serde_json::to_value(&status).unwrap(),
        &body("StatusView"),
        schemas,
        "status",
        &mut seen,
    );
    check(
        &serde_json::to_value(&status.members).unwrap(),
        &serde_json::json!({"items": body("MemberStatusView")}),
        schemas,
        "members",
        &mut seen,
    );
    for name in [
        "StatusView",
        "MemberStatusView",
        "MemberView",
        "Plan",
        "Goal",
        "GoalKind",
        "Pose",
        "Effective",
        "Task",
        "TaskView",
        "TaskSpec",
        "TaskState",
        "DegradationPolicy",
    ] {
        assert!(
            seen.iter().any(|s| s == name),
            "{name} was never checked against a value; saw {seen:?}"
        );
    }
}

#[test]
fn cors_allows_members_pages_and_listed_origins_only() {
    let member = |id: u64, api: &str| cairn_raft::MemberStatus {
        id,
        member: cairn_raft::Member {
            raft_addr: "127.0.0.1:1".into(),
            api_addr: api.into(),
        },
        voter: true,
        matched_index: None,
        lag: None,
        last_ack_ms: None,
    };
    let members = [member(1, "127.0.0.1:8001"), member(2, "10.0.0.2:8001")];
    let extra = ["http://rover.local:8001".to_string()];
    assert!(origin_allowed("http://127.0.0.1:8001", &members, &extra));
    assert!(origin_allowed("https://10.0.0.2:8001", &members, &extra));
    assert!(origin_allowed("http://rover.local:8001", &members, &extra));
    assert!(!origin_allowed("http://127.0.0.1:8002", &members, &extra));
    assert!(!origin_allowed("http://evil.example", &members, &extra));
    assert!(!origin_allowed("null", &members, &extra));
    assert!(check_cors_origins(&extra).is_ok());
    assert!(check_cors_origins(&["rover.local:8001".into()]).is_err());
    assert!(check_cors_origins(&["http://a/b".into()]).is_err());
}

#[test]
fn request_ids_from_clients_are_checked() {
    assert_eq!(
        sane_request_id(&HeaderValue::from_static("abc-1.2_3")).as_deref(),
        Some("abc-1.2_3")
    );
    assert_eq!(sane_request_id(&HeaderValue::from_static("a b")), None);
    assert_eq!(sane_request_id(&HeaderValue::from_str(&"x".repeat(65)).unwrap()), None);
}
