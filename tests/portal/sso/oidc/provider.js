// A loopback OpenID Connect provider for the portal's SSO browser tests.
//
// Built on the certified `oidc-provider` package. Everything comes from the
// environment so the pytest fixture decides the port, the registered client
// and the accounts:
//   OIDC_PORT           port to listen on (127.0.0.1 only)
//   OIDC_CLIENT_ID      the relying party's client id
//   OIDC_CLIENT_SECRET  its secret (client_secret_post)
//   OIDC_REDIRECT_URIS  comma-separated callback URLs (the live server's)
//   OIDC_POST_LOGOUT_REDIRECT_URIS  comma-separated URLs the client may return to after sign-out
//   OIDC_ACCOUNTS       JSON: {"login": {"password", "email", "email_verified", "name", "groups", "sites", "amr"}}
// The sign-in and consent pages are this file's own small forms (no dev
// interactions): a wrong password is refused, and the account's `amr` goes
// into the ID token so the portal can be tested with and without IdP-side MFA.
// PKCE is required for every client. RP-initiated logout (end_session_endpoint)
// is on, with its confirmation page as this file's form too. A test may change
// an account's claims while the provider runs (an e-mail change at the IdP):
// POST /test-control/accounts/<login> with a JSON object of claims to merge
// (loopback only, like everything here). Prints "listening <issuer>" when ready.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
if (!Number.isInteger(port) || port <= 0) {
  throw new Error('OIDC_PORT must be a port number');
}
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || '{}');

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

const consentForm = (uid, clientId, scopes) => page('Test IdP consent', `
<p>${escape(clientId)} asks for: <span id="idp-scopes">${escape(scopes.join(' '))}</span></p>
<form method="post" action="/interaction/${escape(uid)}/confirm">
<button type="submit" id="idp-allow">Allow</button>
</form>`);

const configuration = {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: (process.env.OIDC_REDIRECT_URIS || '').split(',').filter(Boolean),
    response_types: ['code'],
    grant_types: ['authorization_code'],
    post_logout_redirect_uris: (process.env.OIDC_POST_LOGOUT_REDIRECT_URIS || '').split(',').filter(Boolean),
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile', 'pacs'],
  claims: {
    amr: null,
    acr: null,
    auth_time: null,
    openid: ['sub', 'amr', 'auth_time'], // real IdPs put amr in every ID token; so does this one
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    pacs: ['groups', 'sites'],
  },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Test IdP sign-out', `${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" id="idp-logout-yes">Sign me out</button>
<button type="submit" form="op.logoutForm" id="idp-logout-no">Stay signed in</button>`);
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
          groups: account.groups || [],
          sites: account.sites || [],
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

const readForm = async (req) => new URLSearchParams(await readBody(req));

provider.use(async (ctx, next) => {
  const control = ctx.path.match(/^\/test-control\/accounts\/([\w.-]+)$/);
  if (!control) return next();
  if (ctx.method !== 'POST' || !accounts[control[1]]) ctx.throw(404);
  const changes = JSON.parse(await readBody(ctx.req));
  Object.assign(accounts[control[1]], changes);
  ctx.status = 204;
  return undefined;
});

provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm))?$/);
  if (!match) return next();
  const [, uid, action] = match;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
  ctx.set('Cache-Control', 'no-store');
  ctx.type = 'html';

  if (ctx.method === 'GET' && !action) {
    if (details.prompt.name === 'login') {
      ctx.body = loginForm(uid);
    } else {
      ctx.body = consentForm(uid, details.params.client_id, String(details.params.scope).split(' '));
    }
    return undefined;
  }
  if (ctx.method !== 'POST') ctx.throw(405);
  const form = await readForm(ctx.req);

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
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    result = { consent: { grantId: await grant.save() } };
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
