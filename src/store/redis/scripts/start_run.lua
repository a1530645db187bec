-- start_run: an invocation takes a queued run (`store/runs.rs`): only one ever does.
--
-- KEYS: 1 the run
-- ARGV: 1 the runner (the invocation's id), 2 its deadline (Unix ms), 3 now (Unix ms)
-- Returns '' when there is no such run, else the run's fields (HGETALL) after a first
-- element, 'taken' when the run is this runner's, 'not' when it is not (another runner's,
-- ended, or queued past its deadline).
--
-- Safe to run twice: the same runner finds the run its own, and takes it again.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
local answer = 'not'
if status == 'queued' and tonumber(ARGV[3]) <= tonumber(redis.call('HGET', KEYS[1], 'deadline')) then
  redis.call('HSET', KEYS[1], 'status', 'in_progress', 'runner', ARGV[1], 'deadline', ARGV[2])
  answer = 'taken'
elseif status == 'in_progress' and redis.call('HGET', KEYS[1], 'runner') == ARGV[1] then
  answer = 'taken'
end
local fields = redis.call('HGETALL', KEYS[1])
table.insert(fields, 1, answer)
return fields
