-- touch: renews the expiry of KEYS[first..last], or takes it away when ARGV[1] is '0'.
-- Prepended to each chat script (append_turn, set_chat_prompt, clear), which pass their TTL
-- as ARGV[1]. The TTL reaches EXPIRE as the string it was given: a Lua number can be
-- formatted as `1e+08`, which some Redis versions (7.2.0 to 7.2.4) refuse.
-- Safe to run twice: the same expiry, set again.
local function touch(first, last)
  for i = first, last do
    if ARGV[1] ~= '0' then redis.call('EXPIRE', KEYS[i], ARGV[1]) else redis.call('PERSIST', KEYS[i]) end
  end
end
