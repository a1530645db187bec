-- wrk: the instant OpenAI stand-in alone, to subtract its own latency.
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is the capital of France?"}]}'
wrk.headers["Content-Type"] = "application/json"
