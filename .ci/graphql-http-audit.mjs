// GraphQL-over-HTTP conformance: runs the `graphql-http` package's server audits against a
// running gateway's /graphql, with a bearer token on every request.
//
//   node .ci/graphql-http-audit.mjs <dir holding node_modules/graphql-http> <url> <token>
//
// Prints every audit's result; exits 1 if any MUST audit fails. SHOULD and MAY audits that do
// not pass are listed; the ones expected to remain are explained in EXPECTED below, and any
// other one fails the run too, so that a regression cannot hide among them.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const [modules, url, token] = process.argv.slice(2);
if (!modules || !url || !token) {
  console.error('usage: node .ci/graphql-http-audit.mjs <modules dir> <url> <token>');
  process.exit(2);
}
const { serverAudits } = createRequire(resolve(modules, 'package.json'))('graphql-http');

// Audits that do not pass, on purpose.
const EXPECTED = {
  // None so far: the gateway passes every MUST, SHOULD and MAY audit of graphql-http 1.23.
};

const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

const results = [];
// One at a time: the order of the output is the audits' order.
for (const audit of serverAudits({ url, fetchFn })) {
  results.push(await audit.fn());
}

let failed = 0;
for (const result of results) {
  if (result.status === 'ok') {
    console.log(`ok      ${result.id} ${result.name}`);
    continue;
  }
  const level = { error: 'MUST', warn: 'SHOULD', notice: 'MAY' }[result.status] ?? result.status;
  const expected = EXPECTED[result.id];
  console.log(`${expected ? 'known ' : 'FAILED'}  ${result.id} ${result.name}`);
  console.log(`        ${level}: ${result.reason}${expected ? ` (${expected})` : ''}`);
  if (result.response) {
    let body = '';
    try {
      body = await result.response.text();
    } catch {
      // The body was read by the audit already.
    }
    console.log(`        answer: ${result.response.status} ${result.response.headers.get('content-type') ?? ''} ${body.slice(0, 300)}`);
  }
  if (result.status === 'error' || !expected) {
    failed += 1;
  }
}
const ok = results.filter((r) => r.status === 'ok').length;
console.log(`\ngraphql-http audits: ${ok} of ${results.length} passed, ${failed} failing the run`);
process.exit(failed > 0 ? 1 : 0);
