-- begin_live: a streamed turn that other connections may follow (`store/runs.rs`): kept as
-- a run in progress, taken by itself, and named as its chat's live turn until its deadline.
--
-- KEYS: 1 the run, 2 the set of the chat's runs (which deleting the chat deletes), 3 the
--       chat's live turn
-- ARGV: 1 what it asks (sealed), 2 its deadline (Unix ms), 3 the record's seconds to live,
--       4 its id, 5 the milliseconds left to its deadline
-- Returns 1 when kept now, 0 when it was kept already.
--
-- Safe to run twice: the second run finds the run kept (perhaps ended, and no longer named
-- live) and changes nothing.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'deadline', ARGV[2], 'ticket', ARGV[1],
  'batches', '0', 'runner', ARGV[4], 'live', '1')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', math.max(1, tonumber(ARGV[5])))
return 1
