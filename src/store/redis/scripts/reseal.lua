-- reseal: puts values sealed again (`make reseal`) in the place of the values they were read
-- as, only where each is still what was read: a write that came in between (a new turn, a
-- regenerate, a new prompt) is never undone, and its value was sealed with the first key
-- already. A list's sizes in its chat's meta follow the new lengths.
--
-- KEYS: 1 the key, and for a list 2 its chat's meta (only then: an empty key name would
--       hash to another slot of a Cluster)
-- ARGV: 1 what KEYS[1] is: 'list' (then pairs: old, new), 'string' (one pair: old, new) or
--       'hash' (then triples: field, old, new)
-- Returns how many values it replaced.
--
-- Safe to run twice: a value replaced is no longer the old one, so a second run replaces
-- nothing, and leaves the sizes as they are.
local kind, replaced = ARGV[1], 0
if kind == 'list' then
  local wanted = {}
  for i = 2, #ARGV, 2 do wanted[ARGV[i]] = ARGV[i + 1] end
  local grown = 0
  for i, value in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local new = wanted[value]
    if new then
      redis.call('LSET', KEYS[1], i - 1, new)
      grown = grown + #new - #value
      replaced = replaced + 1
      wanted[value] = nil
    end
  end
  if grown ~= 0 and redis.call('HEXISTS', KEYS[2], 'bytes') == 1 then
    redis.call('HINCRBY', KEYS[2], 'bytes', grown)
  end
elseif kind == 'string' then
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
    replaced = 1
  end
elseif kind == 'hash' then
  for i = 2, #ARGV, 3 do
    if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
      replaced = replaced + 1
    end
  end
end
return replaced
