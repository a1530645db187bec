-- release: frees an Idempotency-Key whose request failed, so that a retry runs again.
--
-- KEYS: 1 the Idempotency-Key
-- ARGV: 1 the claim to free, as the claim script set it
-- Returns 1 when freed, 0 when the key holds anything else.
--
-- Deletes the key only while it holds that claim: never another request's claim, nor an
-- answer. Safe to run twice: the second run finds the claim gone (or someone else's) and
-- leaves the key alone.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
