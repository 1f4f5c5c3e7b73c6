#!/usr/bin/env node
// sign.js — keyless Sigstore bundles for Sluice's integration tests, made by
// code that is not Sluice's: @sigstore/sign (the signing library of
// sigstore-js) against @sigstore/mock's Fulcio and Rekor, all offline.
//
// Usage: node sign.js SPEC.json
//   SPEC = {"out": DIR, "bundles": [{"file": NAME, "digest": "sha256:<hex>",
//           "email": E, "issuer": I, "name": OPTIONAL_SUBJECT_NAME}, ...]}
// Writes DIR/NAME for each bundle (application/vnd.dev.sigstore.bundle.v0.3+json),
// DIR/fulcio-root.pem (the mock Fulcio's CA) and DIR/rekor.pub.pem (the mock
// Rekor's key), and prints one JSON line {"bundles": [...], "fulcio", "rekor"}.
// Every bundle of one run shares that CA and Rekor key.
//
// What is signed is what `cosign sign` (v3, new bundle format) signs for an
// image: a DSSE envelope (payloadType application/vnd.in-toto+json) holding
// the in-toto statement
//   {"_type":"https://in-toto.io/Statement/v1",
//    "subject":[{"digest":{"sha256":"<manifest hex>"}}],
//    "predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}
// — cosign puts no subject name (sigstore/cosign#5014) and, since #4635, an
// empty predicate. "name" in the spec adds a subject name, as other
// producers (attest actions) do.
//
// How the mocks are used: @sigstore/mock exports the service handlers
// ({path, fn}); they are served here on 127.0.0.1 on a free port and
// @sigstore/sign's FulcioSigner and RekorWitness talk to them over HTTP like
// to the real services. The OIDC token is an unsigned JWT (the mock Fulcio
// decodes it without checking, as its tests do) carrying iss, email and
// email_verified. Two adaptations, both to match the real services:
//  - the mock CA writes every SAN as a URI; real Fulcio writes an email
//    identity as an rfc822Name SAN, which is what containers-policy.json's
//    `fulcio.subjectEmail` (and Sluice) match. The x509 library's SAN
//    extension class, as the mock CA sees it, is wrapped to issue an email
//    SAN for a subject that is an email address.
//  - the Rekor witness is asked for "intoto" 0.0.2 entries: the mock Rekor
//    logs the proposed entry as the entry body, and only the intoto
//    proposal has the shape of a logged entry (a "dsse" proposal carries
//    proposedContent, which real Rekor rewrites before logging it).
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const crypto = require('crypto');

process.env.NO_PROXY = process.env.no_proxy = '127.0.0.1,localhost';

const MOCK_DIR = path.dirname(require.resolve('@sigstore/mock'));
require(require.resolve('reflect-metadata', { paths: [MOCK_DIR] }));
const x509 = require(require.resolve('@peculiar/x509', { paths: [MOCK_DIR] }));
const mock = require('@sigstore/mock');
const { DSSEBundleBuilder, FulcioSigner, RekorWitness } = require('@sigstore/sign');
const { bundleToJSON } = require('@sigstore/bundle');

const EMAIL_RE = /^[^@\s:/]+@[^@\s/]+$/;

// The mock CA builds SubjectAlternativeNameExtension([{type: 'url', value}]).
function emailSanForEmailSubjects() {
  const Base = x509.SubjectAlternativeNameExtension;
  class EmailSAN extends Base {
    constructor(...args) {
      if (Array.isArray(args[0]))
        args[0] = args[0].map((n) =>
          n.type === 'url' && EMAIL_RE.test(n.value) ? { type: 'email', value: n.value } : n);
      super(...args);
    }
  }
  x509.SubjectAlternativeNameExtension = EmailSAN;
}

function b64url(obj) {
  return Buffer.from(JSON.stringify(obj)).toString('base64url');
}

function identityToken(issuer, email) {
  const claims = { iss: issuer, sub: email, email, email_verified: true, aud: 'sigstore' };
  return [b64url({ alg: 'none', typ: 'JWT' }), b64url(claims), ''].join('.');
}

function statement(digest, name) {
  const [alg, hex] = digest.split(':');
  if (alg !== 'sha256' || !/^[0-9a-f]{64}$/.test(hex)) throw new Error(`bad digest ${digest}`);
  const subject = name ? { name, digest: { sha256: hex } } : { digest: { sha256: hex } };
  return {
    _type: 'https://in-toto.io/Statement/v1',
    subject: [subject],
    predicateType: 'https://sigstore.dev/cosign/sign/v1',
    predicate: {},
  };
}

// Serves the mock handlers ({path, fn}) on 127.0.0.1; resolves to the base URL.
function serve(handlers) {
  const server = http.createServer((req, res) => {
    const h = handlers.find((x) => x.path === req.url && req.method === 'POST');
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      if (!h) {
        res.writeHead(404).end();
        return;
      }
      const r = await h.fn(Buffer.concat(chunks).toString());
      res.writeHead(r.statusCode, { 'Content-Type': r.contentType || 'text/plain' });
      res.end(r.response);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

function pem(label, der) {
  const b64 = Buffer.from(der).toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

async function services(rekorKeys, caKeys) {
  // The Rekor handler is built once the URL (its checkpoint origin) is known.
  const handlers = [];
  const { server, url } = await serve(handlers);
  const ca = await mock.initializeCTLog(caKeys).then((ct) => mock.initializeCA(caKeys, ct));
  handlers.push(mock.fulcioHandler(ca, { subjectClaim: 'email' }));
  handlers.push(mock.rekorHandler(await mock.initializeTLog(url, rekorKeys)));
  return { server, url, ca };
}

async function signOne(url, b) {
  const signer = new FulcioSigner({
    fulcioBaseURL: url,
    identityProvider: { getToken: async () => identityToken(b.issuer, b.email) },
    retry: 0,
  });
  const witness = new RekorWitness({ rekorBaseURL: url, entryType: 'intoto', retry: 0 });
  const builder = new DSSEBundleBuilder({ signer, witnesses: [witness] });
  const data = Buffer.from(JSON.stringify(statement(b.digest, b.name)));
  return bundleToJSON(await builder.create({ data, type: 'application/vnd.in-toto+json' }));
}

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  emailSanForEmailSubjects();
  const rekorKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const caKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const { server, url, ca } = await services(rekorKeys, caKeys);
  try {
    fs.mkdirSync(spec.out, { recursive: true });
    const out = { bundles: [], fulcio: path.join(spec.out, 'fulcio-root.pem'),
                  rekor: path.join(spec.out, 'rekor.pub.pem') };
    fs.writeFileSync(out.fulcio, pem('CERTIFICATE', ca.rootCertificate));
    fs.writeFileSync(out.rekor, rekorKeys.publicKey.export({ format: 'pem', type: 'spki' }));
    for (const b of spec.bundles) {
      const file = path.join(spec.out, b.file);
      fs.writeFileSync(file, JSON.stringify(await signOne(url, b)));
      out.bundles.push(file);
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    server.close();
  }
}

main().catch((e) => {
  process.stderr.write(`sign.js: ${e.stack || e}\n`);
  process.exit(1);
});
