// An AIMS agent in Node.js, written from docs/PROTOCOL.md alone (and the README), with jose as
// the only JOSE library: discovery, its own P-256 key, attestation with a join token, a
// DPoP-bound task token by token exchange, decisions with the server-nonce retry, a replayed
// proof refused, revocation (RFC 7009) and the revoked token refused.
//
// Usage: node agent_client.mjs SCENE.json
//   SCENE: {"base": URL the server is reached at, "join_token": "aims_j_…",
//           "audience": resource server audience URI, "scope": "action:resource …",
//           "intent": "…", "decisions": [{"action", "resource"}, …] (first: the one replayed)}
// Prints one JSON line of what it observed; exits non-zero on the first failure.

import { randomBytes, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  SignJWT,
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
} from "jose";

class Failure extends Error {}
const observed = { checked: [] };
// On the first failure: what was observed up to there on stdout (ok: false), the reason on
// stderr, exit status 1.
process.on("uncaughtException", (error) => {
  observed.ok = false;
  observed.failure = error instanceof Failure ? error.message : String(error?.stack ?? error);
  process.stdout.write(`${JSON.stringify(observed)}\n`);
  process.stderr.write(`FAILED: ${observed.failure}\n`);
  process.exit(1);
});

const scene = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = scene.base.replace(/\/$/, "");

function check(condition, what, detail) {
  if (!condition) {
    throw new Failure(`${what}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
  }
}
const now = () => Math.floor(Date.now() / 1000);
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

// One HTTP exchange: the status, headers and body (parsed as JSON when it is JSON).
async function http(method, url, { headers = {}, body } = {}) {
  const response = await fetch(url, { method, headers, body });
  const text = await response.text();
  let json;
  try {
    json = text === "" ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

// ---- 1. Discovery -----------------------------------------------------------------------

const metadataResponse = await http("GET", `${base}/.well-known/oauth-authorization-server`);
check(metadataResponse.status === 200, "RFC 8414 metadata", metadataResponse.status);
const metadata = metadataResponse.json;
const ISSUER = metadata.issuer;
check(typeof ISSUER === "string" && !ISSUER.endsWith("/"), "issuer without a trailing slash", ISSUER);
for (const member of ["jwks_uri", "token_endpoint", "revocation_endpoint", "response_types_supported"]) {
  check(member in metadata, `metadata member ${member}`, metadata);
}
check(!("authorization_endpoint" in metadata), "no authorization endpoint", metadata);
check(
  metadata.grant_types_supported.includes("urn:ietf:params:oauth:grant-type:token-exchange"),
  "token exchange listed",
  metadata.grant_types_supported,
);
check(
  metadata.dpop_signing_alg_values_supported.includes("ES256"),
  "ES256 DPoP listed",
  metadata.dpop_signing_alg_values_supported,
);
check(metadata.token_endpoint === `${ISSUER}/oauth2/token`, "token endpoint is ISSUER/oauth2/token", metadata.token_endpoint);
observed.issuer = ISSUER;
observed.checked.push("metadata");

// The guide's URLs are ISSUER + path; requests go to the base URL the scene gives (the same
// server; it differs from ISSUER only behind a proxy), proofs name ISSUER.
const reach = (url) => (url.startsWith(ISSUER) ? base + url.slice(ISSUER.length) : url);

const jwksResponse = await http("GET", reach(metadata.jwks_uri));
check(jwksResponse.status === 200, "JWKS", jwksResponse.status);
const jwks = jwksResponse.json;
check(Array.isArray(jwks.keys) && jwks.keys.length > 0, "JWKS has keys", jwks);
for (const key of jwks.keys) {
  check(
    key.kty === "EC" && key.crv === "P-256" && key.alg === "ES256" && key.use === "sig" && key.kid && !("d" in key),
    "JWKS keys are public ES256 signing keys",
    key,
  );
}
check(
  /max-age=60/.test(jwksResponse.headers.get("cache-control") ?? ""),
  "JWKS Cache-Control max-age=60",
  jwksResponse.headers.get("cache-control"),
);
const keySet = createLocalJWKSet(jwks);
observed.jwks_kids = jwks.keys.map((k) => k.kid);
if (metadata.spiffe_bundle_endpoint) {
  const bundle = (await http("GET", reach(metadata.spiffe_bundle_endpoint))).json;
  check(
    JSON.stringify(bundle.keys.map((k) => [k.kid, k.use])) ===
      JSON.stringify(jwks.keys.map((k) => [k.kid, "jwt-svid"])),
    "SPIFFE bundle has the JWKS's keys with use jwt-svid",
    bundle,
  );
  observed.checked.push("spiffe bundle");
}
observed.checked.push("jwks");

// ---- 2. The agent's key --------------------------------------------------------------------

// The guide's RFC 7638 example, computed by jose: does the document's value match?
const exampleThumbprint = await calculateJwkThumbprint({
  kty: "EC",
  crv: "P-256",
  x: "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
  y: "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
});
check(exampleThumbprint === "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", "the guide's thumbprint example", exampleThumbprint);

const { privateKey, publicKey } = await generateKeyPair("ES256");
const exported = await exportJWK(publicKey);
// The required members only, as the SDK sends them.
const publicJwk = { crv: exported.crv, kty: exported.kty, x: exported.x, y: exported.y };
const thumbprint = await calculateJwkThumbprint(publicJwk);
observed.thumbprint = thumbprint;
observed.checked.push("key and thumbprint");

// ---- 3. Attestation ------------------------------------------------------------------------

const nonceResponse = await http("POST", `${base}/v1/attest/nonce`);
check(nonceResponse.status === 200, "attestation nonce", nonceResponse);
const attestNonce = nonceResponse.json.nonce;
check(typeof attestNonce === "string" && typeof nonceResponse.json.expires_at === "string", "nonce answer shape", nonceResponse.json);

const evidence = {
  model: { id: "node-interop-model" },
  toolchain: { name: "node-jose", version: process.versions.node },
  deployment: { cluster: "ci", namespace: "interop" },
};
const iat = now();
const attestProof = await new SignJWT({
  aud: ISSUER,
  iat,
  exp: iat + 60,
  jti: randomBytes(16).toString("hex"),
  nonce: attestNonce,
  evidence,
})
  .setProtectedHeader({ alg: "ES256", jwk: publicJwk, typ: "aims-attest+jwt" })
  .sign(privateKey);

const requestId = `node-interop-${randomBytes(6).toString("hex")}`;
const attestResponse = await http("POST", `${base}/v1/attest`, {
  headers: { "Content-Type": "application/json", "X-Request-ID": requestId },
  body: JSON.stringify({ proof: attestProof, join_token: scene.join_token }),
});
check(attestResponse.status === 200, "attestation", attestResponse.json ?? attestResponse.text);
check(attestResponse.headers.get("x-request-id") === requestId, "X-Request-ID echoed", attestResponse.headers.get("x-request-id"));
const attested = attestResponse.json;
for (const member of ["svid", "spiffe_id", "expires_at", "posture_digest"]) {
  check(member in attested, `attestation answer member ${member}`, attested);
}
const svid = attested.svid;
check(decodeProtectedHeader(svid).typ === "JWT", "SVID typ JWT", decodeProtectedHeader(svid));
const { payload: svidClaims } = await jwtVerify(svid, keySet, {
  issuer: ISSUER,
  audience: ISSUER,
  algorithms: ["ES256"],
  typ: "JWT",
});
check(svidClaims.sub === attested.spiffe_id, "SVID sub is the answer's spiffe_id", svidClaims);
check(svidClaims.aud === ISSUER, "SVID aud is one string, ISSUER", svidClaims.aud);
check(svidClaims.cnf?.jkt === thumbprint, "SVID cnf.jkt is the key's thumbprint", svidClaims.cnf);
check(svidClaims.aims_posture === attested.posture_digest, "SVID aims_posture is the posture digest", svidClaims);
check(/^sha256:[0-9a-f]{64}$/.test(attested.posture_digest), "posture digest form", attested.posture_digest);
check(typeof svidClaims.jti === "string" && svidClaims.exp > svidClaims.iat, "SVID jti, iat, exp", svidClaims);
observed.svid = {
  sub: svidClaims.sub,
  aud: svidClaims.aud,
  cnf_jkt: svidClaims.cnf.jkt,
  lifetime_s: svidClaims.exp - svidClaims.iat,
  kid: decodeProtectedHeader(svid).kid,
};
observed.checked.push("attestation (join token) and SVID verified with jose");

// The nonce is single-use: the same proof again is refused.
const reattest = await http("POST", `${base}/v1/attest`, {
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ proof: attestProof, join_token: scene.join_token }),
});
check(reattest.status === 401 && reattest.json?.error === "invalid_nonce", "a burned attestation nonce is refused", reattest.json);
check(!reattest.headers.has("www-authenticate"), "attest sends no challenge", reattest.headers.get("www-authenticate"));
observed.attest_replay_error = reattest.json.error;

// ---- 4. Task token -------------------------------------------------------------------------

async function dpopProof(method, htu, { accessToken, nonce } = {}) {
  const claims = { jti: b64url(randomBytes(16)), htm: method, htu, iat: now() };
  if (accessToken !== undefined) {
    claims.ath = createHash("sha256").update(accessToken, "ascii").digest("base64url");
  }
  if (nonce !== undefined) claims.nonce = nonce;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", jwk: publicJwk, typ: "dpop+jwt" })
    .sign(privateKey);
}

const tokenForm = new URLSearchParams({
  grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
  subject_token: svid,
  subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
  audience: scene.audience,
  scope: scene.scope,
  intent: scene.intent ?? "check the Node.js client",
}).toString();
const tokenProof = await dpopProof("POST", metadata.token_endpoint);
const tokenResponse = await http("POST", reach(metadata.token_endpoint), {
  headers: { "Content-Type": "application/x-www-form-urlencoded", DPoP: tokenProof },
  body: tokenForm,
});
check(tokenResponse.status === 200, "token exchange", tokenResponse.json ?? tokenResponse.text);
check(/no-store/.test(tokenResponse.headers.get("cache-control") ?? ""), "token answer Cache-Control no-store", tokenResponse.headers.get("cache-control"));
const issued = tokenResponse.json;
check(issued.token_type === "DPoP", "token_type DPoP", issued);
check(issued.issued_token_type === "urn:ietf:params:oauth:token-type:access_token", "issued_token_type", issued);
check(!("refresh_token" in issued), "no refresh token", issued);
const accessToken = issued.access_token;
check(decodeProtectedHeader(accessToken).typ === "at+jwt", "access token typ at+jwt", decodeProtectedHeader(accessToken));
const { payload: tokenClaims } = await jwtVerify(accessToken, keySet, {
  issuer: ISSUER,
  audience: scene.audience,
  algorithms: ["ES256"],
  typ: "at+jwt",
});
check(tokenClaims.cnf?.jkt === thumbprint, "access token cnf.jkt is the key's thumbprint", tokenClaims.cnf);
check(tokenClaims.scope === issued.scope, "access token scope is the answer's", [tokenClaims.scope, issued.scope]);
check(tokenClaims.task_id === issued.task_id, "access token task_id is the answer's", [tokenClaims.task_id, issued.task_id]);
check(tokenClaims.client_id === svidClaims.sub && tokenClaims.sub === svidClaims.sub, "client_id and sub are the agent", tokenClaims);
check(tokenClaims.exp - tokenClaims.iat === issued.expires_in, "expires_in is exp - iat", [tokenClaims.exp - tokenClaims.iat, issued.expires_in]);
observed.token = {
  scope: tokenClaims.scope,
  cnf_jkt: tokenClaims.cnf.jkt,
  aud: tokenClaims.aud,
  client_id: tokenClaims.client_id,
  sub: tokenClaims.sub,
  task_id: tokenClaims.task_id,
  intent: tokenClaims.intent,
  expires_in: issued.expires_in,
  token_type: issued.token_type,
};
observed.checked.push("token exchange and access token verified with jose");

// The token endpoint accepts a proof once.
const tokenReplay = await http("POST", reach(metadata.token_endpoint), {
  headers: { "Content-Type": "application/x-www-form-urlencoded", DPoP: tokenProof },
  body: tokenForm,
});
check(tokenReplay.status === 400 && tokenReplay.json?.error === "invalid_dpop_proof", "a replayed token-endpoint proof is refused", tokenReplay.json ?? tokenReplay.text);
observed.token_replay = { status: tokenReplay.status, error: tokenReplay.json.error };

// ---- 5. Decisions ------------------------------------------------------------------------

const decisionsUrl = `${ISSUER}/v1/decisions`;
let serverNonce; // the last DPoP-Nonce received

async function sendDecision(token, request, proof) {
  const answer = await http("POST", reach(decisionsUrl), {
    headers: { Authorization: `DPoP ${token}`, DPoP: proof, "Content-Type": "application/json" },
    body: JSON.stringify(request),
  });
  const nonce = answer.headers.get("dpop-nonce");
  if (nonce) serverNonce = nonce;
  return { ...answer, proof };
}

// The dance of 5.2: with the last nonce (none the first time); on use_dpop_nonce, once more
// with a new proof carrying the new nonce.
async function decide(token, request) {
  const first = await sendDecision(token, request, await dpopProof("POST", decisionsUrl, { accessToken: token, nonce: serverNonce }));
  if (first.status === 401 && first.json?.error === "use_dpop_nonce") {
    const challenge = first.headers.get("www-authenticate") ?? "";
    check(/^DPoP\b/.test(challenge) && /error="use_dpop_nonce"/.test(challenge), "use_dpop_nonce challenge", challenge);
    check(first.headers.has("dpop-nonce"), "use_dpop_nonce carries DPoP-Nonce");
    const second = await sendDecision(token, request, await dpopProof("POST", decisionsUrl, { accessToken: token, nonce: serverNonce }));
    return { answer: second, retried: true, challenge };
  }
  return { answer: first, retried: false };
}

const decisions = scene.decisions ?? [];
check(decisions.length > 0, "the scene names at least one decision request");
observed.decisions = [];
let replayable;
for (const [index, request] of decisions.entries()) {
  const { answer, retried, challenge } = await decide(accessToken, { ...request, task_id: issued.task_id });
  check(answer.status === 200, `decision ${index}`, answer.json ?? answer.text);
  check(answer.headers.has("dpop-nonce"), "a success carries a fresh DPoP-Nonce");
  const body = answer.json;
  check(["allow", "deny", "approval_required"].includes(body.decision), "decision value", body);
  check(typeof body.decision_id === "string" && Array.isArray(body.policies), "decision answer shape", body);
  observed.decisions.push({
    action: request.action,
    resource: request.resource.id,
    decision: body.decision,
    policies: body.policies,
    policy_version: body.policy_version,
    nonce_retry: retried,
    ...(challenge ? { nonce_challenge: challenge } : {}),
  });
  if (index === 0) replayable = answer.proof;
}
check(observed.decisions[0].nonce_retry, "the first proof (without nonce) was answered use_dpop_nonce");
observed.checked.push("decisions with the server-nonce retry");

// The same proof again: refused as used before.
const replay = await sendDecision(accessToken, { ...decisions[0], task_id: issued.task_id }, replayable);
check(replay.status === 401, "a replayed DPoP proof is refused with 401", replay.json ?? replay.text);
observed.replay = {
  status: replay.status,
  error: replay.json?.error,
  challenge: replay.headers.get("www-authenticate"),
};
check(observed.replay.error === "invalid_dpop_proof", "replay refused as invalid_dpop_proof", observed.replay);
check(/^DPoP\b/.test(observed.replay.challenge ?? ""), "replay refusal challenge is DPoP", observed.replay);
observed.checked.push("replayed proof refused");

// The token presented as Bearer: a DPoP-bound token is refused.
const asBearer = await http("POST", reach(decisionsUrl), {
  headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "application/json" },
  body: JSON.stringify(decisions[0]),
});
observed.as_bearer = { status: asBearer.status, error: asBearer.json?.error, challenge: asBearer.headers.get("www-authenticate") };
check(asBearer.status === 401 && asBearer.json?.error === "invalid_token", "a DPoP-bound token sent as Bearer is refused", observed.as_bearer);

// ---- 6. Revocation -----------------------------------------------------------------------

const revokeResponse = await http("POST", reach(metadata.revocation_endpoint), {
  headers: { "Content-Type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams({ token: accessToken, token_type_hint: "access_token" }).toString(),
});
check(revokeResponse.status === 200 && revokeResponse.text === "", "revocation answers 200 with an empty body", [revokeResponse.status, revokeResponse.text]);
observed.checked.push("revoked (RFC 7009)");

// Decisions with the revoked token are refused; the guide does not promise "at once" at the
// same server, so allow the feed poll a moment and report how long it took.
const revokedAt = Date.now();
let afterRevocation;
let attempts = 0;
for (;;) {
  attempts += 1;
  ({ answer: afterRevocation } = await decide(accessToken, { ...decisions[0], task_id: issued.task_id }));
  if (afterRevocation.status !== 200 || Date.now() - revokedAt > 3000) break;
  await new Promise((resolve) => setTimeout(resolve, 50));
}
observed.after_revocation = {
  status: afterRevocation.status,
  error: afterRevocation.json?.error,
  challenge: afterRevocation.headers.get("www-authenticate"),
  refused_after_ms: Date.now() - revokedAt,
  attempts,
};
check(afterRevocation.status === 401 && afterRevocation.json?.error === "invalid_token", "a revoked token is refused", observed.after_revocation);

// The SVID is not revoked with the task token: as a bearer credential it still gets answers.
const withSvid = await http("POST", reach(decisionsUrl), {
  headers: { Authorization: `Bearer ${svid}`, "Content-Type": "application/json" },
  body: JSON.stringify(decisions[0]),
});
check(withSvid.status === 200, "the SVID as bearer still decides after the token's revocation", withSvid.json ?? withSvid.text);
observed.svid_decision = withSvid.json.decision;
observed.checked.push("revoked token refused; SVID unaffected");

observed.ok = true;
process.stdout.write(`${JSON.stringify(observed)}\n`);
