-- queue_run: keeps a background run, queued, unless it is kept already.
--
-- KEYS: 1 the run (hash: status, deadline, ticket, and later runner, cancel, response,
--       batches), 2 the set of the chat's runs (which deleting the chat deletes)
-- ARGV: 1 its ticket (sealed), 2 when it must have started (Unix ms), 3 its seconds to
--       live, 4 its id
-- Returns 1 when kept now, 0 when it was kept already.
--
-- Safe to run twice: the second run finds the run kept and changes nothing.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'deadline', ARGV[2], 'ticket', ARGV[1],
  'batches', '0')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
