-- wrk: every request is the first turn of a new chat (a fresh chat id each time).
wrk.method = "POST"
wrk.body = '{"content": "What is the capital of France?"}'
wrk.headers["Content-Type"] = "application/json"
local counter = 0
local thread_id = tostring(math.random(1, 1000000000))
request = function()
  counter = counter + 1
  return wrk.format(nil, "/load-" .. thread_id .. "-" .. counter .. "/chat")
end
