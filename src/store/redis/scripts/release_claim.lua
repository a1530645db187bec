-- release_claim: frees the claim on a chat's newest turn whose request failed, so that
-- another request may follow that turn at once rather than when the claim expires.
--
-- KEYS: 1 the claim
-- ARGV: 1 the claimant (its turn id)
-- Returns 1 when freed, 0 when the claim is another's (or gone).
--
-- Safe to run twice: the second run finds the claim gone and leaves the key alone.
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, -#ARGV[1] - 1) == '\n' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
