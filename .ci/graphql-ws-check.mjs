// graphql-transport-ws conformance from the outside: the protocol author's reference client
// (`graphql-ws`, with `ws` as Node's WebSocket) against a running gateway's /graphql.
//
//   node .ci/graphql-ws-check.mjs <dir holding node_modules/graphql-ws and ws> <ws url> <token>
//
// 1. A connection whose connection_init carries a bad token is closed with 4401.
// 2. A connection with {"Authorization": "Bearer <token>"} is acknowledged; the script prints
//    `connected`, subscribes to stockChanged and prints `subscribed`; the event source (a test
//    publishing through the tenant's service, or the change feed after a stock take) must then
//    produce a row within 60 s. The row is checked, the subscription completed and the client
//    disposed. Exits 0 when all of that held, 1 otherwise.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const [modules, url, token] = process.argv.slice(2);
if (!modules || !url || !token) {
  console.error('usage: node .ci/graphql-ws-check.mjs <modules dir> <ws url> <token>');
  process.exit(2);
}
const require = createRequire(resolve(modules, 'package.json'));
const { createClient } = require('graphql-ws');
const WebSocket = require('ws');

const fail = (why) => {
  console.error(`graphql-ws check failed: ${why}`);
  process.exit(1);
};

// 1. A bad token: closed with 4401 (the client does not retry, and the subscription errs).
const refused = await new Promise((done) => {
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: 'Bearer not-a-token' },
    retryAttempts: 0,
    lazy: true,
  });
  client.subscribe(
    { query: 'subscription { stockChanged { specNo } }' },
    {
      next: () => done({ unexpected: 'an event' }),
      error: (e) => done({ code: e?.code, reason: e?.reason }),
      complete: () => done({ unexpected: 'complete' }),
    },
  );
});
if (refused.code !== 4401) {
  fail(`a bad token should close with 4401, got ${JSON.stringify(refused)}`);
}
console.log(`refused  bad token: ${refused.code} ${refused.reason}`);

// 2. A good token: acknowledged, subscribed, one row.
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${token}` },
  retryAttempts: 0,
  lazy: false,
  on: { connected: () => console.log('connected') },
});
const timer = setTimeout(() => fail('no event within 60 s'), 60_000);
const row = await new Promise((done, reject) => {
  const unsubscribe = client.subscribe(
    { query: 'subscription Watch { stockChanged { specNo warehouseNo onHand available } }' },
    {
      next: (result) => {
        unsubscribe();
        done(result);
      },
      error: (e) => reject(new Error(`subscription failed: ${e?.code ?? ''} ${e?.reason ?? JSON.stringify(e)}`)),
      complete: () => reject(new Error('completed before any event')),
    },
  );
  console.log('subscribed');
}).catch((e) => fail(e.message));
clearTimeout(timer);
if (row.errors?.length) {
  fail(`the event has errors: ${JSON.stringify(row.errors)}`);
}
const level = row.data?.stockChanged;
if (typeof level?.specNo !== 'string' || typeof level?.warehouseNo !== 'string') {
  fail(`the event is not a StockLevel: ${JSON.stringify(row)}`);
}
console.log(`event    ${level.specNo} in ${level.warehouseNo}: onHand ${level.onHand}`);
await client.dispose();
console.log('graphql-ws check passed');
