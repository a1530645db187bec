-- touch: renews the expiry of keys[first..last], or takes it away when ttl is '0'; stamp:
-- marks a chat's meta with when it was last written (`updated`, Unix milliseconds) and,
-- the first time, when it was made (`born`, Unix seconds), which is also how a chat's
-- existence is read (`GET /chats` lists only chats whose meta says so).
-- Prepended to each chat script, which pass their TTL as their first argument (each
-- writing to a chat that exists gives it to chat_ttl first). The TTL
-- reaches EXPIRE as the string it was given: a Lua number can be formatted as `1e+08`,
-- which some Redis versions (7.2.0 to 7.2.4) refuse.
-- Safe to run twice: the same expiry, set again; a later stamp of the same write.
local function touch(keys, ttl, first, last)
  for i = first, last do
    if ttl ~= '0' then redis.call('EXPIRE', keys[i], ttl) else redis.call('PERSIST', keys[i]) end
  end
end
-- chat_ttl: the expiry a write gives a chat's keys: a temporary chat's own (its meta's
-- `temp`, in seconds, which no setting of the caller's may lengthen), else `ttl`; and
-- whether it is temporary (a write then does not list it).
local function chat_ttl(meta, ttl)
  local temp = redis.call('HGET', meta, 'temp')
  if temp then return temp, true end
  return ttl, false
end
local function stamp(meta, now)
  redis.call('HSET', meta, 'updated', now)
  redis.call('HSETNX', meta, 'born', string.sub(now, 1, -4))
end
