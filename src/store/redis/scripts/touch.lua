-- touch: renews the expiry of keys[first..last], or takes it away when ttl is '0'.
-- Prepended to each chat script (append_turn, set_chat_prompt, clear), which pass their TTL
-- as their first argument. The TTL reaches EXPIRE as the string it was given: a Lua number can be
-- formatted as `1e+08`, which some Redis versions (7.2.0 to 7.2.4) refuse.
-- Safe to run twice: the same expiry, set again.
local function touch(keys, ttl, first, last)
  for i = first, last do
    if ttl ~= '0' then redis.call('EXPIRE', keys[i], ttl) else redis.call('PERSIST', keys[i]) end
  end
end
