-- wrk: POST the benchmark's GraphQL query with a bearer token (both from the environment).
wrk.method = "POST"
wrk.body = os.getenv("WDT_BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WDT_BENCH_TOKEN")
