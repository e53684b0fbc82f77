-- wrk: GET with a bearer token from the environment.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("WDT_BENCH_TOKEN")
