// The loopback OpenID provider of the tests: the portal's SSO browser tests
// and, as the "EHR", the SMART tests (tests/integrations/smart/ehr.py).
//
// Built on the certified `oidc-provider` package. Everything comes from the
// environment, so each test's fixture decides the port, the clients and the
// accounts (tests/portal/sso/provider.py starts it):
//   IDP_PORT      port to listen on (127.0.0.1 only)
//   IDP_CLIENTS   JSON list: {client_id, client_secret, redirect_uris, post_logout_redirect_uris,
//                 token_endpoint_auth_method (default client_secret_basic),
//                 and for SMART: resource ("pacs" or "ehr" = this server's FHIR base), format ("opaque"|"jwt"), ttl}
//   IDP_ACCOUNTS  JSON: {"login": {"password", "email", "email_verified", "name", "groups", "sites", "amr"}}
//   IDP_PACS      the PACS's resource indicator (the audience its tokens carry): set, it turns on
//                 resource indicators, as the SMART tests need
//   IDP_PATIENTS  JSON: {"<FHIR id>": {"identifier": [{"system", "value"}]}} (the EHR's FHIR server)
//
// The sign-in and consent pages are this file's own small forms (no dev
// interactions): a wrong password is refused, and the account's `amr` goes
// into the ID token so the portal can be tested with and without IdP-side MFA.
// PKCE is required for every client. RP-initiated logout (end_session_endpoint),
// introspection and revocation are on.
//
// What it serves besides the provider's own endpoints (/auth, /token,
// /token/introspection, /token/revocation, /jwks, /session/end):
//   GET  /fhir/.well-known/smart-configuration   SMART discovery (S256 only)
//   GET  /fhir/Patient/<id>                      the patient, for a live access token (of any audience
//                                                of this server) whose patient context it is (else 401/403/404)
//   POST /test-control/launch {"patient": id}    registers an EHR launch; answers {"launch": "<opaque value>"}
//   POST /test-control/accounts/<login>          merges a JSON object of claims into an account while the
//                                                provider runs (an e-mail change at the IdP)
//
// SMART launch context: an authorization request's `launch` parameter (see
// extraParams) names a registered launch; the consent step binds its patient
// to the grant, every access token of the grant carries it as the `patient`
// claim (extraTokenClaims: in JWT access tokens and in introspection
// answers), and the token response carries it as `patient`, as SMART asks.
// Prints "listening <issuer>" when ready.

import {
  createPublicKey, generateKeyPairSync, randomBytes, verify,
} from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
if (!Number.isInteger(port) || port <= 0) throw new Error('IDP_PORT must be a port number');
const issuer = `http://127.0.0.1:${port}`;
const fhirBase = `${issuer}/fhir`;
const pacs = process.env.IDP_PACS || '';
const clients = JSON.parse(process.env.IDP_CLIENTS || '[]');
const accounts = JSON.parse(process.env.IDP_ACCOUNTS || '{}');
const patients = JSON.parse(process.env.IDP_PATIENTS || '{}');
const launches = new Map(); // launch value -> patient FHIR id
const patientOfGrant = new Map(); // grant id -> patient FHIR id

const SMART_SCOPES = [
  'patient/*.read', 'patient/ImagingStudy.read', 'patient/Patient.read', 'patient/Observation.read',
  'patient/ImagingStudy.rs', 'user/*.read', 'user/ImagingStudy.read',
];
const resources = { pacs, ehr: fhirBase };

const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  alg: 'RS256',
  use: 'sig',
};

const escape = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const page = (title, body) => `<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`;

const loginForm = (uid, error) => page('Test IdP sign-in', `
${error ? `<p id="idp-error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label>Username <input name="login" id="idp-login" required></label>
<label>Password <input name="password" id="idp-password" type="password" required></label>
<button type="submit" id="idp-submit">Sign in</button>
</form>`);

const consentForm = (uid, clientId, scope) => page('Test IdP consent', `
<p>${escape(clientId)} asks for: <span id="idp-scopes">${escape(scope)}</span></p>
<form method="post" action="/interaction/${escape(uid)}/confirm">
<button type="submit" id="idp-allow">Allow</button>
</form>`);

const clientOf = (id) => clients.find((c) => c.client_id === id) || {};
const list = (value) => value || [];

const configuration = {
  clients: clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: list(c.post_logout_redirect_uris),
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method || 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  })),
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile', 'pacs', 'launch', 'launch/patient', 'fhirUser'],
  claims: {
    amr: null,
    acr: null,
    auth_time: null,
    openid: ['sub', 'amr', 'auth_time'], // real IdPs put amr in every ID token; so does this one
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    pacs: ['groups', 'sites'],
  },
  extraParams: ['launch', 'aud'],
  pkce: { required: () => true },
  async extraTokenClaims(ctx, token) {
    const patient = token.grantId && patientOfGrant.get(token.grantId);
    return patient ? { patient } : undefined;
  },
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Test IdP sign-out', `${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" id="idp-logout-yes">Sign me out</button>
<button type="submit" form="op.logoutForm" id="idp-logout-no">Stay signed in</button>`);
      },
    },
    resourceIndicators: {
      enabled: Boolean(pacs),
      async defaultResource(ctx, client) {
        return resources[clientOf(client.clientId).resource || 'pacs'];
      },
      async useGrantedResource() { return true; },
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        if (!Object.values(resources).includes(resourceIndicator)) {
          throw new Provider.errors.InvalidTarget();
        }
        const settings = clientOf(client.clientId);
        return {
          scope: SMART_SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: settings.ttl || 300,
          accessTokenFormat: settings.format === 'jwt' ? 'jwt' : 'opaque',
          ...(settings.format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
        };
      },
    },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const account = accounts[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        const [given, ...family] = String(account.name || sub).split(' ');
        return {
          sub,
          email: account.email,
          email_verified: account.email_verified ?? true,
          name: account.name || sub,
          given_name: given,
          family_name: family.join(' '),
          preferred_username: sub,
          groups: list(account.groups),
          sites: list(account.sites),
        };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16384) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// The token response carries the launch context (SMART App Launch §"Response").
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.method === 'POST' && ctx.status === 200 && ctx.body?.access_token) {
    const code = ctx.oidc?.entities?.AuthorizationCode;
    const patient = code && patientOfGrant.get(code.grantId);
    if (patient) ctx.body.patient = patient;
  }
});

// The patient context a bearer access token carries (a JWT's own claim, an opaque token's grant), or undefined.
async function patientOfToken(authorization) {
  const [scheme, value] = String(authorization).split(' ');
  if (scheme !== 'Bearer' || !value) return undefined;
  if (value.split('.').length === 3) { // a JWT access token: its signature
    const [head, body, signature] = value.split('.');
    const publicKey = createPublicKey({ key: signingKey, format: 'jwk' });
    if (!verify('RSA-SHA256', Buffer.from(`${head}.${body}`), publicKey, Buffer.from(signature, 'base64url'))) {
      return undefined;
    }
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
    const live = payload.iss === issuer && payload.exp > Date.now() / 1000;
    return live && [fhirBase, pacs].includes(payload.aud) ? payload.patient : undefined;
  }
  const token = await provider.AccessToken.find(value);
  if (!token || token.isExpired || ![fhirBase, pacs].includes(token.aud)) return undefined;
  return patientOfGrant.get(token.grantId);
}

const smartConfiguration = () => ({
  issuer,
  authorization_endpoint: `${issuer}/auth`,
  token_endpoint: `${issuer}/token`,
  introspection_endpoint: `${issuer}/token/introspection`,
  revocation_endpoint: `${issuer}/token/revocation`,
  jwks_uri: `${issuer}/jwks`,
  grant_types_supported: ['authorization_code'],
  code_challenge_methods_supported: ['S256'],
  token_endpoint_auth_methods_supported: ['client_secret_basic'],
  scopes_supported: ['launch', 'launch/patient', 'openid', 'fhirUser', ...SMART_SCOPES],
  response_types_supported: ['code'],
  capabilities: ['launch-ehr', 'client-confidential-symmetric', 'context-ehr-patient', 'permission-patient'],
});

// The EHR's FHIR server (SMART discovery, Patient read) and the test controls.
provider.use(async (ctx, next) => {
  if (ctx.path === '/fhir/.well-known/smart-configuration' && ctx.method === 'GET') {
    ctx.body = smartConfiguration();
    return undefined;
  }
  const read = ctx.path.match(/^\/fhir\/Patient\/([\w.-]+)$/);
  if (read && ctx.method === 'GET') {
    const granted = await patientOfToken(ctx.get('authorization'));
    // Any live token of a patient context may read that patient (who the patient is is the launch context
    // itself), whatever its audience at this authorization server; no other patient.
    if (!granted) {
      ctx.status = 401;
    } else if (granted !== read[1]) {
      ctx.status = 403;
    } else if (!patients[read[1]]) {
      ctx.status = 404;
    } else {
      ctx.type = 'application/fhir+json';
      ctx.body = { resourceType: 'Patient', id: read[1], identifier: patients[read[1]].identifier };
    }
    return undefined;
  }
  if (ctx.path === '/test-control/launch' && ctx.method === 'POST') {
    const { patient } = JSON.parse(await readBody(ctx.req));
    const launch = randomBytes(12).toString('hex');
    launches.set(launch, patient);
    ctx.body = { launch };
    return undefined;
  }
  const control = ctx.path.match(/^\/test-control\/accounts\/([\w.-]+)$/);
  if (control) {
    if (ctx.method !== 'POST' || !accounts[control[1]]) ctx.throw(404);
    Object.assign(accounts[control[1]], JSON.parse(await readBody(ctx.req)));
    ctx.status = 204;
    return undefined;
  }
  return next();
});

// The grant of a consent: the OIDC scopes and claims asked for, the resource scopes, and the launch's patient.
async function consent(details) {
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  const missing = details.prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  const patient = launches.get(details.params.launch);
  if (patient) patientOfGrant.set(grantId, patient);
  return { consent: { grantId } };
}

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/);
  if (!match) return next();
  const [, uid, action] = match;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
  ctx.set('Cache-Control', 'no-store');
  ctx.type = 'html';
  if (ctx.method === 'GET' && !action) {
    ctx.body = details.prompt.name === 'login'
      ? loginForm(uid)
      : consentForm(uid, details.params.client_id, details.params.scope);
    return undefined;
  }
  if (ctx.method !== 'POST') ctx.throw(405);
  const form = new URLSearchParams(await readBody(ctx.req));
  let result;
  if (action === 'login') {
    const login = form.get('login') || '';
    const account = accounts[login];
    if (!account || account.password !== form.get('password')) {
      ctx.status = 400;
      ctx.body = loginForm(uid, 'Wrong username or password.');
      return undefined;
    }
    result = { login: { accountId: login, amr: account.amr || ['pwd'] } };
  } else if (action === 'confirm' && details.prompt.name === 'consent') {
    result = await consent(details);
  } else {
    ctx.throw(400, 'unexpected interaction step');
  }
  const redirectTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: action !== 'login',
  });
  ctx.status = 303;
  ctx.redirect(redirectTo);
  return undefined;
});

provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
