//! The Shared Signals (OpenID SSF 1.0) transmitter: the revocation log published as CAEP
//! security event tokens (SETs, RFC 8417), so third-party enforcement points learn of a
//! revocation without polling AIMS's own feed.
//!
//! Each revocation-log entry becomes one SET per stream, signed with the current signing key
//! (`typ: secevent+jwt`, verifiable against the JWKS), whose subject is the revoked
//! credential in SSF's `jwt_id` format, with no `sub` and no `exp`. A revoked access token is
//! a CAEP `session-revoked` event; a revoked identity (JWT-SVID) is a CAEP
//! `credential-change` with `change_type: revoke`. A SET's `jti` is derived from its stream
//! and log position, so a redelivered SET is recognisably the same one; its `txn` (RFC 8417
//! §2.2) is the id of the write transaction that appended the entry, shared by every SET of
//! one revocation and by that revocation's audit records (absent for entries older than it).
//!
//! A receiver may also ask for an SSF verification event on its stream: it is queued in the
//! store and delivered like the others, before them, with `sub_id` naming the stream and
//! the receiver's `state` echoed. Only an enabled stream delivers: a paused one keeps what it
//! would carry, a disabled one keeps nothing (the store drops it, SSF 1.0 §8.1.2).
//!
//! Streams are polled (RFC 8936, served by `routes::ssf`) or pushed (RFC 8935, by [`push`],
//! a background task on every replica). A push stream is delivered by the one replica that
//! holds its claim in the store; delivery is at least once: a SET whose acceptance was not
//! recorded (crash, lost answer, a claim that lapsed mid-delivery) is sent again with the
//! same `jti`.
//!
//! This module owns the event format, the stream's wire view and push delivery. It must not
//! decide what is revoked (that is the store's revocation log) nor authenticate receivers
//! (the routes do).

use std::collections::HashMap;
use std::time::Duration;

use aims_store::{
    IssuedKind, SsfDelivery, SsfPending, SsfReceiver, SsfStatus, SsfStream, SsfVerification, Store,
    StoreError,
};
use aims_token::TokenError;
use aims_token::jws;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;
use aims_api::oauth::JWKS_PATH;

/// `typ` of every SET (RFC 8417 §2.3, required by SSF).
pub const SET_TYP: &str = "secevent+jwt";
/// Media type of a pushed SET (RFC 8935 §2).
pub const SET_MEDIA_TYPE: &str = "application/secevent+jwt";
/// CAEP: the session identified by the subject was revoked. AIMS sends it for access
/// tokens: each is one task-bound session of an agent.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP: a credential was created, changed, revoked or deleted. AIMS sends it, with
/// `change_type: revoke`, for identities (JWT-SVIDs).
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// SSF: a verification event a receiver asked for (SSF 1.0 §8.1.4). Sent on request whatever
/// the stream's event types, as the spec allows.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// Every event type a receiver may ask for.
pub const EVENTS_SUPPORTED: [&str; 2] = [SESSION_REVOKED, CREDENTIAL_CHANGE];
/// The `credential_type` of a revoked JWT-SVID.
///
/// CAEP 1.0 lists `password`, `pin`, `x509`, `fido2-platform`, `fido2-roaming`, `fido-u2f`,
/// `verifiable-credential`, `phone-voice`, `phone-sms` and `app`. A JWT-SVID (SPIFFE
/// *Verifiable* Identity Document) is an issuer-signed statement of a workload's identity,
/// bound to the holder's key (`cnf.jkt`) and verified offline against the issuer's published
/// keys: of the listed types, that is what a verifiable credential is. `x509` would send
/// receivers looking for a certificate (`x509_issuer`, `x509_serial`) that does not exist, and
/// the others are human authenticators. `friendly_name: "JWT-SVID"` says which kind exactly.
pub const SVID_CREDENTIAL_TYPE: &str = "verifiable-credential";
/// Push delivery (RFC 8935), as SSF names it.
pub const DELIVERY_PUSH: &str = "urn:ietf:rfc:8935";
/// Poll delivery (RFC 8936), as SSF names it.
pub const DELIVERY_POLL: &str = "urn:ietf:rfc:8936";
/// Path of the transmitter configuration metadata (SSF §7.2).
pub const CONFIGURATION_PATH: &str = "/.well-known/ssf-configuration";
/// Path of the configuration endpoint (stream management).
pub const STREAMS_PATH: &str = "/ssf/streams";
/// Path of the status endpoint.
pub const STATUS_PATH: &str = "/ssf/status";
/// Path of the verification endpoint.
pub const VERIFY_PATH: &str = "/ssf/verify";
/// Prefix of a poll stream's endpoint; the stream id follows.
pub const POLL_PATH: &str = "/ssf/poll";
/// Audit action: a stream was created.
pub const ACTION_STREAM_CREATE: &str = "ssf.stream.create";
/// Audit action: a stream's receiver-supplied configuration was updated or replaced.
pub const ACTION_STREAM_UPDATE: &str = "ssf.stream.update";
/// Audit action: a stream's status was set.
pub const ACTION_STREAM_STATUS: &str = "ssf.stream.status";
/// Audit action: a verification event was asked for.
pub const ACTION_STREAM_VERIFY: &str = "ssf.stream.verify";
/// Audit action: a stream was deleted.
pub const ACTION_STREAM_DELETE: &str = "ssf.stream.delete";
/// Purpose binding a push stream's sealed `Authorization` header to its role.
pub const SEAL_PURPOSE_PUSH_AUTHORIZATION: &str = "ssf-push-authorization";

/// Reasons the store writes to the revocation log for changes a policy made rather than a
/// person: posture drift quarantines the agent.
const POLICY_REASONS: [&str; 1] = ["agent quarantined"];
/// The reason the token endpoint's revocation writes when the holder revokes its own token.
const HOLDER_REASON: &str = "revoked by its holder";

/// The event type a revocation of `kind` is published as.
pub fn event_type(kind: IssuedKind) -> &'static str {
    match kind {
        IssuedKind::Svid => CREDENTIAL_CHANGE,
        IssuedKind::AccessToken => SESSION_REVOKED,
        // A credential kind added later is a token of some session until it says otherwise.
        _ => SESSION_REVOKED,
    }
}

/// CAEP's `initiating_entity` for a revocation-log reason: `policy` for what posture
/// enforcement did, `user` when the holder revoked its own token, `admin` for operators,
/// resource servers, task ends and lifecycle changes.
pub fn initiating_entity(reason: &str) -> &'static str {
    if POLICY_REASONS.contains(&reason) {
        "policy"
    } else if reason == HOLDER_REASON {
        "user"
    } else {
        "admin"
    }
}

/// The `jti` of the SET for log position `seq` on stream `stream_id`: the same every time it
/// is delivered.
pub fn set_jti(stream_id: &str, seq: u64) -> String {
    format!("{stream_id}.{seq}")
}

/// The `jti` of the verification SET at queue position `seq` on stream `stream_id`.
pub fn verification_jti(stream_id: &str, seq: u64) -> String {
    format!("{stream_id}.v{seq}")
}

/// What a SET `jti` of a stream names: a revocation-log position or a verification event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRef {
    /// The SET of this revocation-log position.
    Log(u64),
    /// The verification SET at this queue position.
    Verification(u64),
}

/// What `jti` names, if it is a SET of stream `stream_id`.
pub fn parse_jti(stream_id: &str, jti: &str) -> Option<SetRef> {
    let rest = jti.strip_prefix(stream_id)?.strip_prefix('.')?;
    match rest.strip_prefix('v') {
        Some(seq) => canonical_decimal(seq).map(SetRef::Verification),
        None => canonical_decimal(rest).map(SetRef::Log),
    }
}

/// The log position named by `jti`, if it is a revocation SET of stream `stream_id`.
pub fn parse_set_jti(stream_id: &str, jti: &str) -> Option<u64> {
    match parse_jti(stream_id, jti)? {
        SetRef::Log(seq) => Some(seq),
        SetRef::Verification(_) => None,
    }
}

/// `seq` as a number, if it is written in canonical decimal.
fn canonical_decimal(seq: &str) -> Option<u64> {
    // Canonical decimal only, so one position has exactly one jti.
    if seq.is_empty() || (seq.len() > 1 && seq.starts_with('0')) {
        return None;
    }
    if !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// The claims of the SET publishing `entry` on `stream`, issued at `iat`.
pub fn set_claims(issuer: &str, stream: &SsfStream, entry: &SsfPending, iat: i64) -> Value {
    let revocation = &entry.revocation;
    let mut event = json!({
        "event_timestamp": revocation.revoked_at.unix_timestamp(),
        "initiating_entity": initiating_entity(&revocation.reason),
    });
    // The free-text reason is an operator's: only operators' streams carry it.
    if matches!(stream.receiver, SsfReceiver::User(_))
        && let Value::Object(fields) = &mut event
    {
        fields.insert("reason_admin".into(), json!({ "en": revocation.reason }));
    }
    let event_type = event_type(entry.kind);
    if event_type == CREDENTIAL_CHANGE
        && let Value::Object(fields) = &mut event
    {
        fields.insert("credential_type".into(), SVID_CREDENTIAL_TYPE.into());
        fields.insert("change_type".into(), "revoke".into());
        fields.insert("friendly_name".into(), "JWT-SVID".into());
    }
    let mut claims = json!({
        "iss": issuer,
        "iat": iat,
        "jti": set_jti(&stream.id, revocation.seq),
        "aud": stream.audience,
        "sub_id": {
            "format": "jwt_id",
            "iss": issuer,
            "jti": revocation.credential(),
        },
        "events": { event_type: event },
    });
    // Every event of one revocation shares the transaction that appended it (RFC 8417 §2.2).
    if let (Some(txn), Value::Object(fields)) = (&revocation.txn, &mut claims) {
        fields.insert("txn".into(), txn.as_str().into());
    }
    claims
}

/// The claims of the verification SET for `verification` on `stream`, issued at `iat`
/// (SSF 1.0 §8.1.4.1): the subject is the stream itself, as an `opaque` identifier.
pub fn verification_claims(
    issuer: &str,
    stream: &SsfStream,
    verification: &SsfVerification,
    iat: i64,
) -> Value {
    let event = match &verification.state {
        Some(state) => json!({ "state": state }),
        None => json!({}),
    };
    json!({
        "iss": issuer,
        "iat": iat,
        "jti": verification_jti(&stream.id, verification.seq),
        "aud": stream.audience,
        "sub_id": { "format": "opaque", "id": stream.id },
        "events": { VERIFICATION: event },
    })
}

/// An event due on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A revocation-log entry.
    Revocation(SsfPending),
    /// A verification event the receiver asked for.
    Verification(SsfVerification),
}

impl Due {
    /// What its SET's `jti` names.
    pub fn reference(&self) -> SetRef {
        match self {
            Self::Revocation(entry) => SetRef::Log(entry.revocation.seq),
            Self::Verification(v) => SetRef::Verification(v.seq),
        }
    }

    /// Its SET's `jti` on stream `stream_id`.
    pub fn jti(&self, stream_id: &str) -> String {
        match self.reference() {
            SetRef::Log(seq) => set_jti(stream_id, seq),
            SetRef::Verification(seq) => verification_jti(stream_id, seq),
        }
    }
}

/// Signs the SET for `due` on `stream` with the current key; returns its `jti` and the
/// compact JWS.
pub fn sign_set(
    state: &AppState,
    stream: &SsfStream,
    due: &Due,
) -> Result<(String, String), TokenError> {
    let iat = OffsetDateTime::now_utc().unix_timestamp();
    let claims = match due {
        Due::Revocation(entry) => set_claims(&state.issuer, stream, entry, iat),
        Due::Verification(v) => verification_claims(&state.issuer, stream, v, iat),
    };
    let token = jws::sign(&state.keys().current, &state.rng, SET_TYP, &claims)?;
    Ok((due.jti(&stream.id), token))
}

/// Records that `stream`'s receiver has the events `refs` (acknowledged or refused with an
/// error): they are not due any more.
pub async fn acknowledge(
    store: &dyn Store,
    stream_id: &str,
    refs: &[SetRef],
) -> Result<(), StoreError> {
    let (mut log, mut verifications) = (Vec::new(), Vec::new());
    for r in refs {
        match *r {
            SetRef::Log(seq) => log.push(seq),
            SetRef::Verification(seq) => verifications.push(seq),
        }
    }
    if !verifications.is_empty() {
        store
            .acknowledge_ssf_verifications(stream_id, &verifications)
            .await?;
    }
    if !log.is_empty() {
        store.acknowledge_ssf(stream_id, &log).await?;
    }
    Ok(())
}

/// Whether `stream` carries events of `kind`.
fn delivers(stream: &SsfStream, kind: IssuedKind) -> bool {
    let wanted = event_type(kind);
    stream.events_delivered.iter().any(|e| e == wanted)
}

/// Up to `max` events due on `stream` and whether more may follow: nothing unless the
/// stream is enabled; otherwise the verification events asked for, then the revocation-log
/// entries, each oldest first.
pub async fn due(
    store: &dyn Store,
    stream: &SsfStream,
    max: u32,
) -> Result<(Vec<Due>, bool), StoreError> {
    if stream.status != SsfStatus::Enabled || max == 0 {
        return Ok((Vec::new(), false));
    }
    let verifications = store.ssf_verifications(&stream.id, max).await?;
    let taken = u32::try_from(verifications.len()).unwrap_or(u32::MAX);
    let mut batch: Vec<Due> = verifications.into_iter().map(Due::Verification).collect();
    let rest = max.saturating_sub(taken);
    if rest == 0 {
        // A full batch of verifications: whatever else waits comes next time.
        return Ok((batch, true));
    }
    let (entries, more) = due_entries(store, stream, rest).await?;
    batch.extend(entries.into_iter().map(Due::Revocation));
    Ok((batch, more))
}

/// Up to `max` log entries due on `stream`, oldest first, and whether more may follow.
/// Entries of event types the stream does not carry are acknowledged on the way, so they
/// never hold the stream's position back.
async fn due_entries(
    store: &dyn Store,
    stream: &SsfStream,
    max: u32,
) -> Result<(Vec<SsfPending>, bool), StoreError> {
    let limit = max.saturating_add(1);
    loop {
        let page = store.ssf_pending(&stream.id, limit).await?;
        let full = page.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
        let (mut carried, skipped): (Vec<_>, Vec<_>) =
            page.into_iter().partition(|p| delivers(stream, p.kind));
        if !skipped.is_empty() {
            let seqs: Vec<u64> = skipped.iter().map(|p| p.revocation.seq).collect();
            store.acknowledge_ssf(&stream.id, &seqs).await?;
            if carried.is_empty() && full {
                // A whole page of skipped entries: look past them.
                continue;
            }
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        let more = full || carried.len() > max;
        carried.truncate(max);
        return Ok((carried, more));
    }
}

/// The endpoint a poll stream `stream_id` is polled at.
pub fn poll_endpoint(issuer: &str, stream_id: &str) -> String {
    format!("{issuer}{POLL_PATH}/{stream_id}")
}

/// The stream's configuration as SSF §8.1.1 shows it (never the push `Authorization`
/// header).
pub fn stream_view(issuer: &str, stream: &SsfStream) -> Value {
    let delivery = match &stream.delivery {
        SsfDelivery::Poll => json!({
            "method": DELIVERY_POLL,
            "endpoint_url": poll_endpoint(issuer, &stream.id),
        }),
        SsfDelivery::Push { endpoint_url, .. } => json!({
            "method": DELIVERY_PUSH,
            "endpoint_url": endpoint_url,
        }),
    };
    let mut view = json!({
        "stream_id": stream.id,
        "iss": issuer,
        "aud": stream.audience,
        "delivery": delivery,
        "events_supported": EVENTS_SUPPORTED,
        "events_delivered": stream.events_delivered,
    });
    if let Value::Object(fields) = &mut view {
        // Members with no value are omitted rather than sent empty.
        if !stream.events_requested.is_empty() {
            fields.insert("events_requested".into(), json!(stream.events_requested));
        }
        if let Some(description) = &stream.description {
            fields.insert("description".into(), json!(description));
        }
    }
    view
}

/// The transmitter configuration metadata (SSF §7.1).
pub fn configuration(issuer: &str) -> Value {
    json!({
        "spec_version": "1_0",
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "delivery_methods_supported": [DELIVERY_PUSH, DELIVERY_POLL],
        "configuration_endpoint": format!("{issuer}{STREAMS_PATH}"),
        "status_endpoint": format!("{issuer}{STATUS_PATH}"),
        "verification_endpoint": format!("{issuer}{VERIFY_PATH}"),
        // Receivers authenticate as OAuth clients: a resource server with its client
        // credentials over HTTP Basic (RFC 6749 §2.3.1), an operator with its bearer
        // credential.
        "authorization_schemes": [{ "spec_urn": "urn:ietf:rfc:6749" }],
        "default_subjects": "ALL",
    })
}

/// How often each replica looks for push streams to deliver.
const PUSH_SCAN: Duration = Duration::from_secs(2);
/// How long a replica's claim on a push stream lasts; renewed before every delivery.
const PUSH_LEASE: Duration = Duration::from_secs(30);
/// How long an idle push worker waits for a revocation before it looks again anyway.
const PUSH_IDLE: Duration = Duration::from_secs(5);
/// SETs read per round.
const PUSH_BATCH: u32 = 100;
/// Wait after the first failed delivery; doubles up to [`PUSH_MAX_BACKOFF`].
const PUSH_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between delivery attempts to an unreachable receiver.
const PUSH_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Per-attempt timeout of a push.
const PUSH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a receiver's answer read (its error description).
const PUSH_MAX_ANSWER: usize = 4096;

/// Delivers every push stream whose claim this replica holds, until `stop`: looks for push
/// streams every [`PUSH_SCAN`] and runs one worker per stream.
pub async fn push(state: AppState, mut stop: watch::Receiver<bool>) {
    // Names this replica's claims; random, so two replicas never share one.
    let replica = state.claim_holder();
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(PUSH_SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        workers.retain(|_, worker| !worker.is_finished());
        match push_streams(state.store.as_ref()).await {
            Ok(ids) => {
                failing = false;
                for id in ids {
                    workers.entry(id.clone()).or_insert_with(|| {
                        tokio::spawn(deliver(state.clone(), id, replica.clone(), stop.clone()))
                    });
                }
            }
            Err(error) if !failing => {
                failing = true;
                tracing::error!(%error, "cannot list SSF push streams; pushes wait until the store answers");
            }
            Err(_) => {}
        }
    }
}

/// The ids of every push stream, read page by page.
async fn push_streams(store: &dyn Store) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let page = store
            .list_ssf_streams(None, &after, aims_store::MAX_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(ids);
        };
        after.clone_from(&last.id);
        ids.extend(
            page.into_iter()
                .filter(|s| matches!(s.delivery, SsfDelivery::Push { .. }))
                .map(|s| s.id),
        );
    }
}

/// Whether the stream's receiver is still registered: a removed resource server or user
/// receives nothing more.
async fn receiver_exists(store: &dyn Store, receiver: &SsfReceiver) -> Result<bool, StoreError> {
    Ok(match receiver {
        SsfReceiver::ResourceServer(name) => store.resource_server(name).await?.is_some(),
        SsfReceiver::User(name) => store.list_users().await?.iter().any(|u| &u.name == name),
    })
}

/// What a receiver made of one pushed SET.
enum Outcome {
    /// Accepted (202).
    Accepted,
    /// Refused as invalid (400 with an RFC 8935 error): sending it again would not help.
    Refused(String),
    /// Not delivered: try again later.
    Failed(String),
}

/// Waits `wait`, or less if `stop` changes; `false` when stopping.
async fn pause(wait: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Delivers push stream `id` while this replica holds its claim; returns when the stream is
/// gone, another replica holds it, its receiver is gone, or on `stop` (the next scan starts
/// a new worker if there is still work for this replica).
async fn deliver(state: AppState, id: String, replica: String, mut stop: watch::Receiver<bool>) {
    let store = state.store.clone();
    let mut live = state.revocations.subscribe();
    let mut queued = state.ssf_queued.subscribe();
    let mut backoff = PUSH_FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let stream = match store.ssf_stream(&id).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(stream = %id, %error, "cannot read SSF stream");
                return;
            }
        };
        let SsfDelivery::Push {
            endpoint_url,
            sealed_authorization,
        } = &stream.delivery
        else {
            return;
        };
        match receiver_exists(store.as_ref(), &stream.receiver).await {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        if stream.status != SsfStatus::Enabled {
            // Paused or disabled: nothing is sent (the store keeps or drops what waits).
            // Looked at again after a while, until the receiver enables it or deletes it.
            if !pause(PUSH_IDLE, &mut stop).await {
                return;
            }
            continue;
        }
        let authorization = match sealed_authorization {
            None => None,
            Some(sealed) => {
                match state
                    .master()
                    .open(SEAL_PURPOSE_PUSH_AUTHORIZATION, &stream.id, sealed)
                {
                    Ok(opened) => Some(opened.expose_secret().to_vec()),
                    Err(error) => {
                        tracing::error!(stream = %id, %error, "the push stream's authorization header does not unseal; not delivering");
                        return;
                    }
                }
            }
        };
        if !claim(&state, &id, &replica).await {
            return;
        }
        let batch = match due(store.as_ref(), &stream, PUSH_BATCH).await {
            Ok((batch, _)) => batch,
            Err(error) => {
                tracing::warn!(stream = %id, %error, "cannot read the SSF stream's pending events");
                if !pause(backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            // Idle: wake on this replica's next revocation or verification request, or look
            // again after a while.
            tokio::select! {
                received = live.recv() => if matches!(received, Err(RecvError::Closed)) { return },
                received = queued.recv() => if matches!(received, Err(RecvError::Closed)) { return },
                _ = tokio::time::sleep(PUSH_IDLE) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        for entry in &batch {
            // Renewed before every send, so only the claim holder ever sends.
            if !claim(&state, &id, &replica).await {
                return;
            }
            let outcome = match sign_set(&state, &stream, entry) {
                Ok((_, set)) => send(&state, endpoint_url, authorization.as_deref(), set).await,
                Err(error) => Outcome::Failed(format!("cannot sign: {error}")),
            };
            let jti = entry.jti(&id);
            let delivered = match outcome {
                Outcome::Accepted => true,
                Outcome::Refused(err) => {
                    tracing::warn!(stream = %id, %jti, %err, "SSF receiver refused a SET; not sending it again");
                    true
                }
                Outcome::Failed(why) => {
                    tracing::warn!(stream = %id, %jti, %why, retry_in = ?backoff, "SSF push failed");
                    false
                }
            };
            if !delivered {
                if !pause(backoff, &mut stop).await {
                    return;
                }
                backoff = backoff.saturating_mul(2).min(PUSH_MAX_BACKOFF);
                break;
            }
            backoff = PUSH_FIRST_BACKOFF;
            if let Err(error) = acknowledge(store.as_ref(), &id, &[entry.reference()]).await {
                // Delivered but not recorded: it is sent again (same jti) once the store
                // answers.
                tracing::warn!(stream = %id, %error, "cannot record an SSF delivery");
                break;
            }
        }
    }
}

/// Claims (or renews the claim on) push stream `id` for this replica.
async fn claim(state: &AppState, id: &str, replica: &str) -> bool {
    let now = OffsetDateTime::now_utc();
    match state
        .store
        .claim_ssf_stream(id, replica, now, now + PUSH_LEASE)
        .await
    {
        Ok(claimed) => claimed,
        Err(error) => {
            tracing::warn!(stream = %id, %error, "cannot claim an SSF push stream");
            false
        }
    }
}

/// POSTs one SET (RFC 8935 §2) and classifies the answer.
async fn send(
    state: &AppState,
    endpoint_url: &str,
    authorization: Option<&[u8]>,
    set: String,
) -> Outcome {
    // Addresses in the URL are checked here; names when the push client resolves them.
    let allowed = reqwest::Url::parse(endpoint_url).is_ok_and(|url| {
        crate::outbound::push_target_allowed(&url, state.config.ssf_push_private_networks)
    });
    if !allowed {
        return Outcome::Failed("the endpoint is not a public address".into());
    }
    let mut request = state
        .push_http
        .post(endpoint_url)
        .header(reqwest::header::CONTENT_TYPE, SET_MEDIA_TYPE)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(PUSH_ATTEMPT_TIMEOUT)
        .body(set);
    if let Some(value) = authorization {
        match reqwest::header::HeaderValue::from_bytes(value) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            Err(_) => return Outcome::Failed("the authorization header is invalid".into()),
        }
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Outcome::Failed(error.without_url().to_string()),
    };
    let status = response.status();
    if status == reqwest::StatusCode::ACCEPTED {
        return Outcome::Accepted;
    }
    if status == reqwest::StatusCode::BAD_REQUEST {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > PUSH_MAX_ANSWER {
                break;
            }
        }
        let err = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("err").and_then(Value::as_str).map(str::to_owned));
        if let Some(err) = err {
            // Bounded and printable before it reaches a log line.
            let err: String = err.chars().filter(|c| !c.is_control()).take(64).collect();
            return Outcome::Refused(err);
        }
    }
    Outcome::Failed(format!("answered {status}"))
}

#[cfg(test)]
mod tests {
    use aims_core::id::UserName;
    use aims_core::id::{AgentName, ResourceServerName};
    use aims_store::{Revocation, Revoked};

    use super::*;

    fn entry(kind: IssuedKind, reason: &str) -> SsfPending {
        SsfPending {
            revocation: Revocation {
                seq: 42,
                revoked: Revoked::Credential("tok-1".into()),
                agent: AgentName::new("coder").unwrap(),
                task_id: Some("t1".into()),
                audience: Some("https://rs.example".into()),
                revoked_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
                expires_at: OffsetDateTime::from_unix_timestamp(1_700_000_300).unwrap(),
                reason: reason.into(),
                txn: Some("9f2c".into()),
            },
            kind,
        }
    }

    fn stream() -> SsfStream {
        SsfStream {
            id: "abc".into(),
            receiver: SsfReceiver::ResourceServer(ResourceServerName::new("rs").unwrap()),
            audience: "https://rs.example".into(),
            delivery: SsfDelivery::Poll,
            events_requested: Vec::new(),
            events_delivered: EVENTS_SUPPORTED.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            acked_through: 0,
            status: aims_store::SsfStatus::Enabled,
            status_reason: None,
        }
    }

    #[test]
    fn jtis_name_one_position_of_one_stream() {
        assert_eq!(set_jti("abc", 42), "abc.42");
        assert_eq!(parse_set_jti("abc", "abc.42"), Some(42));
        for bad in [
            "abd.42",
            "abc42",
            "abc.",
            "abc.042",
            "abc.-1",
            "abc.4 2",
            "abc.+4",
            "ab.c.4",
            "abc.99999999999999999999",
        ] {
            assert_eq!(parse_set_jti("abc", bad), None, "{bad}");
        }
        assert_eq!(parse_set_jti("abc", "abc.0"), Some(0));
    }

    #[test]
    fn verification_jtis_are_apart_from_log_positions() {
        assert_eq!(verification_jti("abc", 7), "abc.v7");
        assert_eq!(parse_jti("abc", "abc.v7"), Some(SetRef::Verification(7)));
        assert_eq!(parse_jti("abc", "abc.7"), Some(SetRef::Log(7)));
        assert_eq!(parse_set_jti("abc", "abc.v7"), None);
        for bad in ["abc.v", "abc.v07", "abc.vv7", "abd.v7", "abc.V7", "abc.v-1"] {
            assert_eq!(parse_jti("abc", bad), None, "{bad}");
        }
    }

    #[test]
    fn verification_sets_name_the_stream_and_echo_the_state() {
        let asked = SsfVerification {
            seq: 3,
            state: Some("s-1".into()),
            requested_at: OffsetDateTime::UNIX_EPOCH,
        };
        let claims = verification_claims("https://aims.example", &stream(), &asked, 7);
        assert_eq!(
            claims,
            json!({
                "iss": "https://aims.example",
                "iat": 7,
                "jti": "abc.v3",
                "aud": "https://rs.example",
                "sub_id": {"format": "opaque", "id": "abc"},
                "events": { VERIFICATION: {"state": "s-1"} },
            })
        );
        let stateless = SsfVerification {
            state: None,
            ..asked
        };
        let claims = verification_claims("https://aims.example", &stream(), &stateless, 7);
        assert_eq!(claims["events"], json!({ VERIFICATION: {} }));
    }

    /// An operator's stream: the one that carries the free-text reason.
    fn operator_stream() -> SsfStream {
        SsfStream {
            receiver: SsfReceiver::User(UserName::new("root").unwrap()),
            ..stream()
        }
    }

    #[test]
    fn reasons_reach_operators_only() {
        let entry = entry(IssuedKind::AccessToken, "contractor left");
        let to_rs = set_claims("https://aims.example", &stream(), &entry, 7);
        assert!(!to_rs.to_string().contains("contractor left"), "{to_rs}");
        assert_eq!(
            to_rs["events"][SESSION_REVOKED]["initiating_entity"],
            "admin"
        );
        let to_operator = set_claims("https://aims.example", &operator_stream(), &entry, 7);
        assert_eq!(
            to_operator["events"][SESSION_REVOKED]["reason_admin"],
            json!({"en": "contractor left"})
        );
    }

    #[test]
    fn access_tokens_are_sessions_and_svids_credentials() {
        let token = set_claims(
            "https://aims.example",
            &operator_stream(),
            &entry(IssuedKind::AccessToken, "task ended"),
            7,
        );
        assert_eq!(token["jti"], "abc.42");
        assert_eq!(token["aud"], "https://rs.example");
        assert_eq!(token["iat"], 7);
        assert_eq!(
            token["sub_id"],
            json!({"format": "jwt_id", "iss": "https://aims.example", "jti": "tok-1"})
        );
        assert!(token.get("sub").is_none() && token.get("exp").is_none());
        assert_eq!(token["txn"], "9f2c");
        assert_eq!(
            token["events"],
            json!({ SESSION_REVOKED: {
                "event_timestamp": 1_700_000_000,
                "initiating_entity": "admin",
                "reason_admin": {"en": "task ended"},
            }})
        );
        let mut before_txn = entry(IssuedKind::Svid, "agent quarantined");
        before_txn.revocation.txn = None;
        let svid = set_claims("https://aims.example", &operator_stream(), &before_txn, 7);
        assert!(svid.get("txn").is_none(), "{svid}");
        assert_eq!(
            svid["events"],
            json!({ CREDENTIAL_CHANGE: {
                "credential_type": "verifiable-credential",
                "change_type": "revoke",
                "friendly_name": "JWT-SVID",
                "event_timestamp": 1_700_000_000,
                "initiating_entity": "policy",
                "reason_admin": {"en": "agent quarantined"},
            }})
        );
    }

    #[test]
    fn initiating_entities_follow_the_reason() {
        assert_eq!(initiating_entity("agent quarantined"), "policy");
        assert_eq!(initiating_entity("revoked by its holder"), "user");
        for reason in [
            "revoked by an operator",
            "task ended",
            "agent suspended",
            "agent decommissioned",
            "revoked through the revocation endpoint",
            "anything an operator wrote",
        ] {
            assert_eq!(initiating_entity(reason), "admin", "{reason}");
        }
    }

    #[test]
    fn views_name_the_poll_endpoint_and_omit_empty_members() {
        let view = stream_view("https://aims.example", &stream());
        assert_eq!(
            view["delivery"],
            json!({"method": DELIVERY_POLL, "endpoint_url": "https://aims.example/ssf/poll/abc"})
        );
        assert!(view.get("events_requested").is_none());
        assert!(view.get("description").is_none());
        let pushed = SsfStream {
            delivery: SsfDelivery::Push {
                endpoint_url: "https://rx.example/events".into(),
                sealed_authorization: Some(vec![1, 2, 3]),
            },
            ..stream()
        };
        let view = stream_view("https://aims.example", &pushed);
        assert_eq!(
            view["delivery"],
            json!({"method": DELIVERY_PUSH, "endpoint_url": "https://rx.example/events"})
        );
    }
}
