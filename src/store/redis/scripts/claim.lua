-- claim: claims an Idempotency-Key for a request, or says who holds it.
--
-- KEYS: 1 the Idempotency-Key, 2 for a chat's key, the set of the chat's key hashes (so
--       that deleting the chat deletes the answers kept for its retries)
-- ARGV: 1 the claim ('pending', the request's fingerprint and its own token, a line each),
--       2 how long to hold it, in seconds, 3 the key's hash and 4 how long the set lives
--       (when KEYS[2] is given)
-- Returns '' when this request holds the key now, else what the key holds (another
-- request's claim, or an answer).
--
-- Safe to run twice: a run sent again finds this request's own claim and answers '' again.
local found = redis.call('GET', KEYS[1])
if found == ARGV[1] then return '' end
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return ''
