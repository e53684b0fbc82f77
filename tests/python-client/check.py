"""A partner's first steps, through the Python client generated from openapi/openapi.json.

`.ci/run` generates the client with openapi-python-client into target/python-client, puts it on
PYTHONPATH and runs this script against a running gateway:

    python check.py http://127.0.0.1:8080 "$TOKEN"

It lists stock, checks the ETag round trip, records a stock take with an Idempotency-Key,
replays it with the same key (same stock-take number, `Idempotent-Replayed: true`) and sends the
key with another body (422 IDEMPOTENCY_KEY_REUSED), then registers a webhook endpoint, rotates
its secret, queues a test message, reads its delivery log, deletes it, and sees a private URL
refused, all through the client's typed functions (the token needs webhooks:read and
webhooks:write too). Any mismatch ends it with a non-zero exit and says what differed.
"""

import sys
import uuid

from wdt_gateway_rest_api_client import AuthenticatedClient
from wdt_gateway_rest_api_client.api.stock import get_stock, post_stock_take
from wdt_gateway_rest_api_client.api.webhooks import (
    delete_endpoint,
    get_deliveries,
    get_endpoint,
    list_endpoints,
    post_endpoint,
    post_rotate,
    post_test,
)
from wdt_gateway_rest_api_client.models import (
    CreatedEndpoint,
    DeliveryList,
    DeliveryView,
    EndpointList,
    ErrorCode,
    EventType,
    NewEndpoint,
    Problem,
    RotatedSecret,
    StockListResponse,
    StockTakeInput,
    StockTakeLine,
    StockTakeMode,
    StockTakeResult,
)

SPEC_NO = "G00001-01"


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"python client check failed: {what}")


def main(base_url: str, token: str) -> None:
    client = AuthenticatedClient(
        base_url=base_url, token=token, raise_on_unexpected_status=True, timeout=30.0
    )

    listed = get_stock.sync_detailed(client=client, spec_no=[SPEC_NO])
    expect(listed.status_code == 200, f"GET /v1/stock answered {listed.status_code}: {listed.content!r}")
    expect(isinstance(listed.parsed, StockListResponse), f"GET /v1/stock parsed as {listed.parsed!r}")
    rows = listed.parsed.items
    expect(len(rows) > 0, f"no stock rows for {SPEC_NO}")
    expect(all(row.spec_no == SPEC_NO for row in rows), f"rows of other SKUs: {rows!r}")
    expect(isinstance(rows[0].on_hand, str), f"on_hand is a decimal string, not {rows[0].on_hand!r}")
    etag = listed.headers.get("etag")
    expect(etag is not None and listed.headers.get("x-request-id") is not None, f"headers: {listed.headers!r}")

    unchanged = get_stock.sync_detailed(client=client, spec_no=[SPEC_NO], if_none_match=etag)
    expect(unchanged.status_code == 304, f"If-None-Match answered {unchanged.status_code}, not 304")

    # Count the stock the ERP already has, so the take changes nothing but records a take.
    row = rows[0]
    take = StockTakeInput(
        warehouse_no=row.warehouse_no,
        mode=StockTakeMode.ALL,
        remark="python client check",
        lines=[StockTakeLine(spec_no=SPEC_NO, quantity=row.on_hand or "0")],
    )
    key = f"python-client-{uuid.uuid4()}"
    first = post_stock_take.sync_detailed(client=client, body=take, idempotency_key=key)
    expect(first.status_code == 201, f"POST /v1/stock-takes answered {first.status_code}: {first.content!r}")
    expect(isinstance(first.parsed, StockTakeResult), f"stock take parsed as {first.parsed!r}")
    expect(first.parsed.stock_take_no != "", "an empty stock_take_no")
    expect("idempotent-replayed" not in first.headers, "the first write says it was replayed")

    again = post_stock_take.sync_detailed(client=client, body=take, idempotency_key=key)
    expect(again.status_code == 201, f"the replay answered {again.status_code}: {again.content!r}")
    expect(isinstance(again.parsed, StockTakeResult), f"the replay parsed as {again.parsed!r}")
    expect(
        again.parsed.stock_take_no == first.parsed.stock_take_no,
        f"the replay has stock_take_no {again.parsed.stock_take_no!r}, the first {first.parsed.stock_take_no!r}",
    )
    expect(
        again.headers.get("idempotent-replayed") == "true",
        f"the replay's Idempotent-Replayed is {again.headers.get('idempotent-replayed')!r}",
    )

    other = StockTakeInput(
        warehouse_no=row.warehouse_no,
        mode=StockTakeMode.ALL,
        remark="another body under the same key",
        lines=[StockTakeLine(spec_no=SPEC_NO, quantity=row.on_hand or "0")],
    )
    reused = post_stock_take.sync_detailed(client=client, body=other, idempotency_key=key)
    expect(reused.status_code == 422, f"the reused key answered {reused.status_code}: {reused.content!r}")
    expect(isinstance(reused.parsed, Problem), f"the reused key parsed as {reused.parsed!r}")
    expect(
        reused.parsed.code == ErrorCode.IDEMPOTENCY_KEY_REUSED,
        f"the reused key's code is {reused.parsed.code!r}",
    )

    endpoint_id = webhooks(client)

    print(
        f"python client check passed: {len(rows)} stock rows, stock take {first.parsed.stock_take_no} "
        f"replayed under its key, the key refused for another body; webhook endpoint {endpoint_id} "
        "registered, rotated, tested and deleted, a private URL refused"
    )


def webhooks(client: AuthenticatedClient) -> str:
    """Registers an endpoint on a public address (nothing answers there from CI: its test
    message stays pending), rotates its secret, queues a test message, reads the log, deletes it."""
    made = post_endpoint.sync_detailed(
        client=client,
        body=NewEndpoint(
            url="https://8.8.4.4/python-client-check",
            events=[EventType.STOCK_CHANGED],
            description="python client check",
        ),
    )
    expect(made.status_code == 201, f"POST /v1/webhook-endpoints answered {made.status_code}: {made.content!r}")
    expect(isinstance(made.parsed, CreatedEndpoint), f"the new endpoint parsed as {made.parsed!r}")
    endpoint = made.parsed
    expect(endpoint.secret.startswith("whsec_"), "the secret is not whsec_…")
    expect(made.headers.get("location") == f"/v1/webhook-endpoints/{endpoint.id}", f"Location: {made.headers!r}")

    listed = list_endpoints.sync_detailed(client=client)
    expect(isinstance(listed.parsed, EndpointList), f"the list parsed as {listed.parsed!r}")
    expect(any(e.id == endpoint.id for e in listed.parsed.endpoints), "the new endpoint is not listed")
    expect("whsec_" not in listed.content.decode(), "the list shows a secret")

    rotated = post_rotate.sync_detailed(endpoint.id, client=client)
    expect(isinstance(rotated.parsed, RotatedSecret), f"the rotation parsed as {rotated.parsed!r}")
    expect(rotated.parsed.secret != endpoint.secret, "the rotated secret is the old one")

    queued = post_test.sync_detailed(endpoint.id, client=client)
    expect(queued.status_code == 202, f"the test answered {queued.status_code}: {queued.content!r}")
    expect(isinstance(queued.parsed, DeliveryView), f"the test parsed as {queued.parsed!r}")
    log = get_deliveries.sync_detailed(endpoint.id, client=client, limit=10)
    expect(isinstance(log.parsed, DeliveryList), f"the log parsed as {log.parsed!r}")
    expect(
        any(d.id == queued.parsed.id for d in log.parsed.deliveries),
        f"the test message {queued.parsed.id} is not in the log",
    )

    gone = delete_endpoint.sync_detailed(endpoint.id, client=client)
    expect(gone.status_code == 204, f"DELETE answered {gone.status_code}")
    missing = get_endpoint.sync_detailed(endpoint.id, client=client)
    expect(missing.status_code == 404, f"the deleted endpoint answered {missing.status_code}")
    expect(
        isinstance(missing.parsed, Problem) and missing.parsed.code == ErrorCode.NOT_FOUND,
        f"the deleted endpoint's problem is {missing.parsed!r}",
    )

    private = post_endpoint.sync_detailed(
        client=client,
        body=NewEndpoint(url="http://127.0.0.1:9/hook", events=[EventType.STOCK_CHANGED]),
    )
    expect(private.status_code == 400, f"a loopback URL answered {private.status_code}: {private.content!r}")
    expect(
        isinstance(private.parsed, Problem) and "loopback" in private.parsed.detail,
        f"the loopback URL's problem is {private.parsed!r}",
    )
    return endpoint.id


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: check.py BASE_URL TOKEN")
    main(sys.argv[1], sys.argv[2])
