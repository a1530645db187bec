-- delete_chat: removes a chat entirely: its turns, its prompt, its meta (title, usage,
-- window) and every Idempotency-Key it holds (answers kept for retries hold its words).
--
-- KEYS: 1 turns, 2 system, 3 meta, 4 the set of the chat's Idempotency-Key hashes, 5 the
--       start of the chat's key names (`N:chat:{ID}`), which the keys are named from
-- Returns 1.
--
-- The turns' markers stay for their hour: a turn's write sent again after a cut must not
-- bring a deleted chat back. Safe to run twice: what is gone stays gone.
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', KEYS[5] .. ':idem:' .. hash)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
