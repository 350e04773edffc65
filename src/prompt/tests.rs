use serde_json::json;

use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_micros(s * 1_000_000)
}

fn text(name: &str, labels: &[&str], tags: Option<&[&str]>) -> NewPrompt {
    parse_create(
        &json!({"name": name, "prompt": "Hi {{who}}", "labels": labels, "tags": tags}),
        "API",
    )
    .unwrap()
}

/// Applies `action` to `versions` as the writer does: rewrites `put`, drops `remove`.
fn apply(versions: &mut Vec<PromptVersion>, action: Action, now: Timestamp) -> Plan {
    let plan = plan("p", versions, &action, now).unwrap();
    versions.retain(|v| !plan.remove.contains(&v.version));
    for p in &plan.put {
        match versions.iter_mut().find(|v| v.version == p.version) {
            Some(v) => *v = p.clone(),
            None => versions.push(p.clone()),
        }
    }
    versions.sort_by_key(|v| v.version);
    plan
}

fn create(versions: &mut Vec<PromptVersion>, new: NewPrompt, s: i64) -> PromptVersion {
    let id = format!("id-{s}");
    apply(
        versions,
        Action::Create {
            prompt: Box::new(new),
            id,
        },
        at(s),
    )
    .result
    .unwrap()
}

fn labels(versions: &[PromptVersion]) -> Vec<(u32, Vec<&str>)> {
    versions
        .iter()
        .map(|v| (v.version, v.labels.iter().map(String::as_str).collect()))
        .collect()
}

#[test]
fn versions_count_up_and_latest_and_labels_move() {
    let mut vs = Vec::new();
    let v1 = create(&mut vs, text("p", &["production"], None), 1);
    assert_eq!(
        (v1.version, v1.labels.clone()),
        (1, vec!["production".into(), "latest".into()])
    );
    create(&mut vs, text("p", &["staging"], None), 2);
    create(&mut vs, text("p", &["production"], None), 3);
    assert_eq!(
        labels(&vs),
        vec![
            (1, vec![]),
            (2, vec!["staging"]),
            (3, vec!["production", "latest"]),
        ]
    );
    // A version whose labels were taken is marked as updated then.
    assert_eq!((vs[0].created_at, vs[0].updated_at), (at(1), at(3)));
    assert_eq!((vs[1].created_at, vs[1].updated_at), (at(2), at(3)));
    assert_eq!(
        find(&vs, &Selector::Label("staging".into()))
            .unwrap()
            .version,
        2
    );
}

#[test]
fn tags_are_shared_and_kept_when_omitted() {
    let mut vs = Vec::new();
    create(&mut vs, text("p", &[], Some(&["a", "a", "b"])), 1);
    let v2 = create(&mut vs, text("p", &[], None), 2);
    assert_eq!(v2.tags, vec!["a", "b"]);
    create(&mut vs, text("p", &[], Some(&["c"])), 3);
    assert!(vs.iter().all(|v| v.tags == vec!["c"]), "{vs:?}");
}

#[test]
fn type_cannot_change_across_versions() {
    let mut vs = Vec::new();
    create(&mut vs, text("p", &[], None), 1);
    let chat = parse_create(
        &json!({"name": "p", "type": "chat", "prompt": [{"role": "user", "content": "x"}]}),
        "API",
    )
    .unwrap();
    let err = plan(
        "p",
        &vs,
        &Action::Create {
            prompt: Box::new(chat),
            id: "x".into(),
        },
        at(2),
    )
    .unwrap_err();
    assert!(matches!(err, PromptError::Invalid(m) if m.contains("keeps its type")));
}

#[test]
fn relabel_adds_labels_and_takes_them_from_other_versions() {
    let mut vs = Vec::new();
    create(&mut vs, text("p", &["production"], None), 1);
    create(&mut vs, text("p", &[], None), 2);
    let plan = apply(
        &mut vs,
        Action::Relabel {
            version: 2,
            labels: vec!["production".into(), "canary".into()],
        },
        at(5),
    );
    assert_eq!(
        labels(&vs),
        vec![(1, vec![]), (2, vec!["latest", "production", "canary"])]
    );
    assert_eq!(plan.result.unwrap().updated_at, at(5));
    let missing = super::plan(
        "p",
        &vs,
        &Action::Relabel {
            version: 9,
            labels: vec![],
        },
        at(6),
    );
    assert_eq!(
        missing.unwrap_err(),
        PromptError::NotFound("Prompt not found: 'p' with version 9".into())
    );
    let latest = super::plan(
        "p",
        &vs,
        &Action::Relabel {
            version: 1,
            labels: vec!["latest".into()],
        },
        at(6),
    );
    assert!(matches!(latest, Err(PromptError::Invalid(_))));
}

#[test]
fn deleting_the_latest_version_hands_latest_to_the_newest_left() {
    let mut vs = Vec::new();
    create(&mut vs, text("p", &["production"], None), 1);
    create(&mut vs, text("p", &[], None), 2);
    create(&mut vs, text("p", &[], None), 3);
    apply(&mut vs, Action::Delete(Some(Selector::Version(3))), at(4));
    assert_eq!(
        labels(&vs),
        vec![(1, vec!["production"]), (2, vec!["latest"])]
    );
    apply(
        &mut vs,
        Action::Delete(Some(Selector::Label("production".into()))),
        at(5),
    );
    assert_eq!(labels(&vs), vec![(2, vec!["latest"])]);
    let none = plan(
        "p",
        &vs,
        &Action::Delete(Some(Selector::Label("gone".into()))),
        at(6),
    );
    assert_eq!(
        none.unwrap_err(),
        PromptError::NotFound("Prompt not found: 'p' with label 'gone'".into())
    );
    let all = apply(&mut vs, Action::Delete(None), at(7));
    assert_eq!(all.remove, vec![2]);
    assert!(vs.is_empty());
}

#[test]
fn create_body_validation() {
    let bad = |body: serde_json::Value| match parse_create(&body, "API") {
        Err(PromptError::Invalid(m)) => m,
        other => panic!("{body} should be invalid, got {other:?}"),
    };
    assert!(bad(json!({"prompt": "x"})).contains("name is required"));
    assert!(bad(json!({"name": "a|b", "prompt": "x"})).contains("'|'"));
    assert!(bad(json!({"name": "new", "prompt": "x"})).contains("reserved"));
    assert!(bad(json!({"name": "x".repeat(256), "prompt": "x"})).contains("255"));
    assert!(bad(json!({"name": "p", "prompt": "x", "labels": ["Prod"]})).contains("\"Prod\""));
    assert!(bad(json!({"name": "p", "prompt": "x", "labels": ["a".repeat(37)]})).contains("36"));
    assert!(bad(json!({"name": "p", "prompt": "x", "type": "image"})).contains("type"));
    assert!(
        bad(json!({"name": "p", "prompt": [{"role": "user", "content": "x"}]})).contains("chat")
    );
    assert!(bad(json!({"name": "p", "type": "chat", "prompt": "x"})).contains("array"));
    assert!(
        bad(json!({"name": "p", "type": "chat", "prompt": [{"role": "user"}]}))
            .contains("prompt[0]")
    );
    assert!(
        bad(json!({"name": "p", "type": "chat", "prompt": [
            {"role": "user", "content": "{{ history }}"}, {"type": "placeholder", "name": "history"}
        ]}))
        .contains("history")
    );
    assert!(
        bad(json!({"name": "p", "prompt": "x", "commitMessage": "m".repeat(501)})).contains("500")
    );

    let ok = parse_create(
        &json!({"name": "folder/p", "type": "chat", "config": null, "labels": ["prod-1.2_x"],
                "prompt": [{"role": "system", "content": "Be {{tone}}", "extra": 1},
                           {"type": "placeholder", "name": "history"},
                           {"type": "chatmessage", "role": "user", "content": "hi"}]}),
        "API",
    )
    .unwrap();
    assert_eq!(ok.config, json!({}));
    assert_eq!(ok.tags, None);
    assert_eq!(
        ok.prompt,
        json!([{"role": "system", "content": "Be {{tone}}"},
               {"type": "placeholder", "name": "history"},
               {"role": "user", "content": "hi", "type": "chatmessage"}])
    );
}

#[test]
fn list_summaries_aggregate_matching_versions() {
    let mut a = Vec::new();
    create(&mut a, text("a", &["production"], Some(&["t1"])), 1);
    let mut a2 = text("a", &[], None);
    a2.config = json!({"model": "m2"});
    create(&mut a, a2, 2);
    let mut b = Vec::new();
    create(&mut b, text("b", &["staging"], Some(&["t2"])), 3);
    let all: Vec<PromptVersion> = a.into_iter().chain(b).collect();

    let s = summarize(&all, &ListFilter::default());
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "a");
    assert_eq!(s[0].versions, vec![1, 2]);
    assert_eq!(s[0].labels, vec!["latest", "production"]);
    assert_eq!(s[0].last_config, json!({"model": "m2"}));
    assert_eq!(s[0].tags, vec!["t1"]);

    let prod = summarize(
        &all,
        &ListFilter {
            label: Some("production".into()),
            ..Default::default()
        },
    );
    assert_eq!(prod.len(), 1);
    assert_eq!(
        (prod[0].versions.clone(), prod[0].last_config.clone()),
        (vec![1], json!({}))
    );
    let tagged = summarize(
        &all,
        &ListFilter {
            tag: Some("t2".into()),
            ..Default::default()
        },
    );
    assert_eq!(tagged[0].name, "b");
    let recent = summarize(
        &all,
        &ListFilter {
            from_updated: Some(at(2)),
            to_updated: Some(at(3)),
            ..Default::default()
        },
    );
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].versions, vec![1, 2]);
}
