use super::*;
use crate::audit::{Actor, Outcome, action};
use proptest::prelude::*;
use serde::de::value::Error as ValueError;

/// The field names a derived `Deserialize` asks a deserializer for: a deserializer that
/// records them and refuses everything.
fn field_names<T: Deserialize<'static>>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = ValueError;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ValueError> {
            Err(de::Error::custom("only structs"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, ValueError> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    assert!(T::deserialize(&mut fields).is_err());
    fields.0.unwrap()
}

#[test]
fn the_shape_has_the_events_fields() {
    assert_eq!(
        field_names::<Shape<'static>>(),
        field_names::<AuditEvent>(),
        "Shape must list AuditEvent's fields, in its order"
    );
}

/// The time of [`full_event`]: an offset and a fraction of a second.
fn a_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(1_796_624_462_345_678_000)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(1, 30, 0).unwrap())
}

fn full_event() -> AuditEvent {
    AuditEvent::new(
        a_time(),
        Actor::User {
            name: "alice".to_owned(),
            role: "admin".to_owned(),
        },
        action::DECISION,
        Outcome::Denied,
    )
    .request(Some("req-1".to_owned()))
    .code("policy_denied")
    .agent("spiffe://acme.example/agent/coder")
    .owner("team-a@acme.example")
    .resource("repo/acme/app")
    .task("task-1")
    .token("tok-1")
    .parent_token("tok-0")
    .chain(vec!["spiffe://acme.example/agent/a".to_owned()])
    .intent("fix the build")
    .decision("deny", vec!["p1".to_owned(), "p2".to_owned()])
    .approval("apr-1")
    .details(serde_json::json!({"k": [1, -2, 3.5, null, true, "s", {"n": {}}]}))
}

#[test]
fn the_fast_path_reads_every_body_the_writer_writes() {
    let actors = [
        full_event().actor,
        Actor::Agent {
            spiffe_id: "spiffe://acme.example/agent/a".to_owned(),
        },
        Actor::ResourceServer {
            name: "rs".to_owned(),
        },
        Actor::Anonymous,
        Actor::System,
    ];
    for actor in actors {
        let mut event = full_event();
        event.actor = actor;
        let body = event.to_body();
        let fast = Columns::fast(&body).unwrap_or_else(|| panic!("refused {body}"));
        assert_eq!(Some(fast.clone()), Columns::full(&body));
        assert_eq!(fast.time_ms, unix_ms(event.time));
        assert_eq!(fast.action, event.action);
        assert_eq!(fast.agent.as_deref(), event.agent.as_deref());
        assert_eq!(fast.task_id.as_deref(), event.task_id.as_deref());
        assert!(
            matches!(fast.action, Cow::Borrowed(_)),
            "no copy of a plain text"
        );
    }
    let bare = AuditEvent::new(
        OffsetDateTime::UNIX_EPOCH,
        Actor::System,
        "x",
        Outcome::Success,
    );
    let body = bare.to_body();
    let columns = Columns::fast(&body).unwrap();
    assert_eq!((columns.agent, columns.task_id), (None, None));
}

#[test]
fn escaped_text_reads_as_its_value() {
    let body = full_event()
        .to_body()
        .replace("\"task-1\"", r#""t\u0061sk-\"1\"""#);
    let columns = Columns::fast(&body).unwrap();
    assert_eq!(columns.task_id.as_deref(), Some("task-\"1\""));
    assert_eq!(Some(columns), Columns::full(&body));
}

/// Bodies today's parse refuses; each must be refused by the fast path and by [`Columns::of`].
#[test]
fn what_the_event_refuses_the_fast_path_refuses() {
    let good = full_event().to_body();
    let stamp = a_time()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(good.contains(&stamp));
    let bad = [
        String::new(),
        "null".to_owned(),
        good[..good.len() - 1].to_owned(),
        format!("{good} x"),
        // A copied column twice, with the same or another value.
        good.replacen('{', r#"{"action":"decision","#, 1),
        good.replacen('{', r#"{"action":"revoke","#, 1),
        good.replacen('{', r#"{"agent":"spiffe://acme.example/agent/other","#, 1),
        good.replacen('{', r#"{"task_id":null,"#, 1),
        good.replacen('{', r#"{"time":"2026-12-07T06:31:02Z","#, 1),
        good.replacen('{', r#"{"details":1,"#, 1),
        // Unknown fields, at the top and in the actor's kind.
        good.replacen('{', r#"{"extra":1,"#, 1),
        good.replace(r#""kind":"user""#, r#""kind":"robot""#),
        good.replace(r#""name":"alice","#, ""),
        good.replace(r#""kind":"user""#, r#""kind":"user","kind":"user""#),
        // Wrong types.
        good.replace(r#""task-1""#, "1"),
        good.replace(r#""req-1""#, "[]"),
        good.replace(r#"["p1","p2"]"#, r#"["p1",2]"#),
        good.replace(r#"["p1","p2"]"#, "null"),
        good.replace(r#""outcome":"denied""#, r#""outcome":"maybe""#),
        good.replace(r#""alice""#, "true"),
        // Times that are not RFC 3339.
        good.replace(&stamp, "2026-12-07T25:01:02Z"),
        good.replace(&stamp, "2026-13-07T08:01:02Z"),
        good.replace(&stamp, "2026-12-07T08:01:02"),
        // Details that are not a JSON value serde_json keeps.
        good.replace("3.5", "1e400"),
        good.replace(r#""s""#, r#""\ud800""#),
        good.replace(r#""s""#, r#""\q""#),
        good.replace(r#""s""#, "\"\u{1}\""),
        good.replace(
            r#"{"n":{}}"#,
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        ),
    ];
    for body in bad {
        assert!(
            serde_json::from_str::<AuditEvent>(&body).is_err(),
            "the event accepts {body}"
        );
        assert_eq!(Columns::fast(&body), None, "{body}");
        assert_eq!(Columns::of(&body), None, "{body}");
    }
}

/// A map whose first key `serde_json` reserves is left to the full parse, whatever this
/// build's `serde_json` features make of it.
#[test]
fn reserved_keys_are_left_to_the_event() {
    let body = full_event()
        .to_body()
        .replace(r#"{"n":{}}"#, r#"{"$serde_json::private::RawValue":"[1"}"#);
    assert_eq!(Columns::fast(&body), None);
    assert_eq!(Columns::of(&body), Columns::full(&body));
}

/// Actors in forms the writer never writes but `Actor` accepts are left to the full parse.
#[test]
fn other_forms_of_an_actor_are_left_to_the_event() {
    let good = full_event().to_body();
    let actor = r#"{"kind":"user","name":"alice","role":"admin"}"#;
    assert!(good.contains(actor));
    for body in [
        good.replace(
            actor,
            r#"{"role":"admin","team":"a","name":"alice","kind":"user"}"#,
        ),
        good.replace(actor, r#"{"kind":"system","name":"alice"}"#),
        good.replace(actor, r#"["user","alice","admin"]"#),
    ] {
        assert_eq!(Columns::fast(&body), None, "{body}");
        assert!(Columns::full(&body).is_some(), "{body}");
        assert_eq!(Columns::of(&body), Columns::full(&body));
    }
    // A key order of the fast path's own is still read.
    let body = good.replace(actor, r#"{"role":"admin","name":"alice","kind":"user"}"#);
    assert!(Columns::fast(&body).is_some());
}

/// Text with escapes, multi-byte characters and JSON punctuation.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[a-z0-9"\\/{}\[\]:, \n\té€😀\u{1}]{0,12}"#).unwrap()
}

fn event() -> impl Strategy<Value = AuditEvent> {
    (
        (-1_000_000_000i64..4_000_000_000, 0u32..1_000_000_000),
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::collection::vec(text(), 0..3),
        proptest::option::of(text()),
    )
        .prop_map(|((secs, nanos), action, agent, task, owner, chain, code)| {
            let time = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .replace_nanosecond(nanos)
                .unwrap();
            let mut e = AuditEvent::new(time, Actor::System, &action, Outcome::Success);
            e.agent = agent;
            e.task_id = task;
            e.owner = owner.clone();
            e.code = code;
            e.delegation_chain = chain;
            if let Some(owner) = owner {
                e.actor = Actor::User {
                    name: owner,
                    role: "r".to_owned(),
                };
                e.details = serde_json::json!({"n": secs, "f": 0.5, "a": [null]});
            }
            e
        })
}

/// A body changed by a splice: `cut` bytes at `at` replaced by `with`.
fn splice(body: &str, at: usize, cut: usize, with: &str) -> String {
    let mut bytes = body.as_bytes().to_vec();
    let at = at % (bytes.len() + 1);
    let end = (at + cut).min(bytes.len());
    bytes.splice(at..end, with.bytes());
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every body the writer writes is read by the fast path, with the event's columns.
    #[test]
    fn written_bodies_read_the_same(e in event()) {
        let body = e.to_body();
        let fast = Columns::fast(&body);
        prop_assert!(fast.is_some(), "{}", body);
        prop_assert_eq!(fast, Columns::full(&body));
    }

    /// Whatever a body has become, the fast path accepts it only if the event does, and
    /// then with the same columns; so [`Columns::of`] answers as the event does.
    #[test]
    fn edited_bodies_are_never_accepted_more(
        e in event(),
        at in 0usize..400,
        cut in 0usize..6,
        with in proptest::string::string_regex(
            r#"(,"(action|agent|task_id|time|details|extra|kind)":|"|\\u00|null|\{|\}|\[|\]|1e999|-0|[a-z0-9,: ]){0,3}"#
        ).unwrap(),
        copy in any::<bool>(),
    ) {
        let body = e.to_body();
        // Either a splice of new text, or a copy of part of the body elsewhere in it (which
        // repeats fields).
        let with = if copy {
            let from = at % body.len();
            body.get(from..(from + cut * 7).min(body.len())).unwrap_or("").to_owned()
        } else {
            with
        };
        let edited = splice(&body, at.wrapping_mul(7), cut, &with);
        let full = Columns::full(&edited);
        if let Some(fast) = Columns::fast(&edited) {
            prop_assert_eq!(Some(fast), full.clone(), "{}", edited);
        }
        prop_assert_eq!(Columns::of(&edited), full);
    }
}
