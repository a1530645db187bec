-- delete_chat: removes a chat entirely: its turns, its prompt, its meta (title, usage,
-- window), the claim on its newest turn, every Idempotency-Key it holds (answers kept for
-- retries hold its words) and every background run whose answer lands in it (their
-- requests and events hold them too); leaves its floor, its tombstone, above its last version, so
-- that a turn from a read before the deletion does not bring the chat back.
--
-- KEYS: 1 turns, 2 system, 3 meta, 4 the set of the chat's Idempotency-Key hashes, 5 the
--       floor, 6 the claim on its newest turn, 7 the deletion's marker, 8 the start of the
--       chat's key names (`N:chat:{ID}`), which its Idempotency-Keys and runs are named
--       from, 9 the set of its runs' ids, 10 its live turn
-- ARGV: 1 the floor's ttl, 2 the marker's ttl
-- Returns 1.
--
-- The turns' markers stay for their hour: a turn's write sent again after a cut must not
-- bring a deleted chat back. Safe to run twice: the marker is checked first and set last,
-- so a run sent again does not raise the floor over a read made since.
if redis.call('EXISTS', KEYS[7]) == 1 then return 1 end
local version, floor = found(KEYS[3], KEYS[5])
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', KEYS[8] .. ':idem:' .. hash)
end
for _, run in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  redis.call('DEL', KEYS[8] .. ':run:' .. run, KEYS[8] .. ':run:' .. run .. ':events')
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[9], KEYS[10])
redis.call('SET', KEYS[5], next_version(version, floor), 'EX', ARGV[1])
redis.call('SET', KEYS[7], '1', 'EX', ARGV[2])
return 1
