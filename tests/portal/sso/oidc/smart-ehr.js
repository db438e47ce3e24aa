// A loopback "EHR" for the SMART tests: a real OAuth 2.0 authorization server
// (the certified `oidc-provider` package, like provider.js beside it) plus the
// two pieces of the EHR's FHIR server that SMART needs.
//
//   EHR_PORT      port to listen on (127.0.0.1 only)
//   EHR_PACS      the PACS's resource indicator (the audience its tokens carry)
//   EHR_CLIENTS   JSON list: {client_id, client_secret, redirect_uris, resource, format ("opaque"|"jwt"), ttl}
//                 `resource` is the client's default resource indicator ("pacs" or "ehr" = this EHR's FHIR base)
//   EHR_PATIENTS  JSON: {"<FHIR id>": {"identifier": [{"system", "value"}], "name": "FAMILY^GIVEN"}}
//   EHR_ACCOUNTS  JSON: {"login": "password"}
//
// What it serves, besides the provider's own endpoints (/auth, /token,
// /token/introspection, /token/revocation, /jwks):
//   GET  /fhir/.well-known/smart-configuration   SMART discovery (S256 only)
//   GET  /fhir/Patient/<id>                      the patient, for a live access token (of any audience
//                                                of this server) whose patient context it is (else 401/403/404)
//   POST /test-control/launch {"patient": id}    registers an EHR launch; answers {"launch": "<opaque value>"}
//
// SMART launch context: an authorization request's `launch` parameter (see
// extraParams) names a registered launch; the consent step binds its patient
// to the grant, every access token of the grant carries it as the `patient`
// claim (extraTokenClaims: in JWT access tokens and in introspection
// answers), and the token response carries it as `patient`, as SMART asks.
// PKCE (S256) is required for every client. Prints "listening <issuer>".

import {
  createPublicKey, generateKeyPairSync, randomBytes, verify,
} from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.EHR_PORT);
if (!Number.isInteger(port) || port <= 0) throw new Error('EHR_PORT must be a port number');
const issuer = `http://127.0.0.1:${port}`;
const fhirBase = `${issuer}/fhir`;
const pacs = process.env.EHR_PACS || '';
const clients = JSON.parse(process.env.EHR_CLIENTS || '[]');
const patients = JSON.parse(process.env.EHR_PATIENTS || '{}');
const accounts = JSON.parse(process.env.EHR_ACCOUNTS || '{}');
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

const clientOf = (id) => clients.find((c) => c.client_id === id) || {};

const configuration = {
  clients: clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'launch', 'launch/patient', 'fhirUser'],
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
    resourceIndicators: {
      enabled: true,
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
    if (!(sub in accounts)) return undefined;
    return { accountId: sub, async claims() { return { sub }; } };
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

provider.use(async (ctx, next) => {
  if (ctx.path === '/fhir/.well-known/smart-configuration' && ctx.method === 'GET') {
    ctx.body = {
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
    };
    return undefined;
  }
  const read = ctx.path.match(/^\/fhir\/Patient\/([\w.-]+)$/);
  if (read && ctx.method === 'GET') {
    const [scheme, value] = String(ctx.get('authorization')).split(' ');
    let granted;
    if (scheme === 'Bearer' && value && value.split('.').length === 3) { // a JWT access token: its signature
      const [head, body, signature] = value.split('.');
      const publicKey = createPublicKey({ key: signingKey, format: 'jwk' });
      if (verify('RSA-SHA256', Buffer.from(`${head}.${body}`), publicKey, Buffer.from(signature, 'base64url'))) {
        const payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
        const live = payload.iss === issuer && payload.exp > Date.now() / 1000;
        if (live && [fhirBase, pacs].includes(payload.aud)) granted = payload.patient;
      }
      if (!granted) { ctx.status = 401; return undefined; }
    } else {
      const token = scheme === 'Bearer' && value ? await provider.AccessToken.find(value) : undefined;
      if (!token || token.isExpired || ![fhirBase, pacs].includes(token.aud)) {
        ctx.status = 401;
        return undefined;
      }
      granted = patientOfGrant.get(token.grantId);
    }
    // Any live token of a patient context may read that patient (who the patient is is the launch context
    // itself), whatever its audience at this authorization server; no other patient.
    if (granted !== read[1]) {
      ctx.status = 403;
      return undefined;
    }
    const patient = patients[read[1]];
    if (!patient) {
      ctx.status = 404;
      return undefined;
    }
    ctx.type = 'application/fhir+json';
    ctx.body = { resourceType: 'Patient', id: read[1], identifier: patient.identifier };
    return undefined;
  }
  if (ctx.path === '/test-control/launch' && ctx.method === 'POST') {
    const { patient } = JSON.parse(await readBody(ctx.req));
    const launch = randomBytes(12).toString('hex');
    launches.set(launch, patient);
    ctx.body = { launch };
    return undefined;
  }
  return next();
});

const loginForm = (uid, error) => page('Test EHR sign-in', `
${error ? `<p id="ehr-error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
<label>Username <input name="login" id="ehr-login" required></label>
<label>Password <input name="password" id="ehr-password" type="password" required></label>
<button type="submit" id="ehr-submit">Sign in</button>
</form>`);

const consentForm = (uid, clientId, scopes) => page('Test EHR consent', `
<p>${escape(clientId)} asks for: <span id="ehr-scopes">${escape(scopes)}</span></p>
<form method="post" action="/interaction/${escape(uid)}/confirm">
<button type="submit" id="ehr-allow">Allow</button>
</form>`);

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
    if (!(login in accounts) || accounts[login] !== form.get('password')) {
      ctx.status = 400;
      ctx.body = loginForm(uid, 'Wrong username or password.');
      return undefined;
    }
    result = { login: { accountId: login } };
  } else if (action === 'confirm' && details.prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    const patient = launches.get(details.params.launch);
    if (patient) patientOfGrant.set(grantId, patient);
    result = { consent: { grantId } };
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
